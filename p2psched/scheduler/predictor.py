"""What this node expects of each worker, learned from what it saw: `Predictor` (wait and run time
per worker, model and input size, as mean ± spread) and `WorkerViews` (the node's private record
of each worker: outcomes, per-model run times, stalls, and a circuit breaker that skips a worker
that keeps failing). Sans-I/O: time comes in as `now`; nothing here reads a clock or a file.

Owns: the learned statistics, the frozen `LookupTable` an operator can ship as JSON, and each
worker's record. Promises: `estimate` always answers (observed, then coarser observations of the
same worker, then the worker's claim, then a default) and says which in `source`; in
`lookup_table` mode it answers from the table alone, while observations keep the learned model
current; memory stays within `max_keys` learned statistics and `max_workers` records.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from p2psched.identity import NODE_ID_BYTES
from p2psched.wire import schema
from p2psched.wire.schema import SchemaError

MODES = ("default", "lookup_table")
Mode = Literal["default", "lookup_table"]
Source = Literal["observed", "worker", "claimed", "default", "table"]

ANY_SIZE = -1  # the bucket of a statistic over every input size
TABLE_VERSION = 1


def size_bucket(size: int) -> int:
    """The power-of-two bucket of an encoded input of `size` bytes (0 for an empty input)."""
    if size < 0:
        raise ValueError(f"input size must be >= 0 bytes, got {size!r}")
    return size.bit_length()


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected wait before a task starts and run time once started, in seconds, each a mean and
    the spread of a single observation around it (standard deviation). `samples` is how many
    observations the answer rests on (0 for a claim or the default)."""

    wait_mean: float
    wait_err: float
    run_mean: float
    run_err: float
    samples: int
    source: Source

    def to_json(self) -> dict[str, Any]:
        return {
            "wait_mean": self.wait_mean,
            "wait_err": self.wait_err,
            "run_mean": self.run_mean,
            "run_err": self.run_err,
            "samples": self.samples,
        }


class _Moments:
    """An exponentially weighted mean and variance. The weight of a new value is
    max(alpha_min, 1/n): the plain mean and (population) variance for the first 1/alpha_min
    values, then a moving window of about 2/alpha_min values, so it follows drift."""

    __slots__ = ("n", "mean", "var")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.var = 0.0

    def add(self, x: float, alpha_min: float) -> None:
        self.n += 1
        w = max(alpha_min, 1.0 / self.n)
        diff = x - self.mean
        incr = w * diff
        self.mean += incr
        # West's incremental form: with w = 1/n this is exactly Welford's population variance.
        self.var = (1.0 - w) * (self.var + diff * incr)

    @property
    def err(self) -> float:
        return math.sqrt(self.var)


class _Learned:
    """Wait and run statistics of one key, and when it last learned something."""

    __slots__ = ("wait", "run", "updated")

    def __init__(self) -> None:
        self.wait = _Moments()
        self.run = _Moments()
        self.updated = 0.0

    def estimate(self, source: Source) -> Estimate:
        return Estimate(
            self.wait.mean, self.wait.err, self.run.mean, self.run.err, self.run.n, source
        )


# A learned key: (worker, model, bucket) for one input size, (worker, model, ANY_SIZE) for the
# worker's model over all sizes, (worker, None, None) for the worker over all models. The model
# slot is None for tasks with no model too, so "any model" is told apart by its None bucket.
_Key = tuple[bytes, str | None, int | None]


@dataclass(frozen=True, slots=True)
class LookupTable:
    """Frozen estimates, keyed as the predictor falls back: by worker, model and size bucket; by
    worker and model (any size); by worker (any model); then `default`. Read-only mappings."""

    sizes: MappingProxyType[tuple[bytes, str | None, int], Estimate]
    models: MappingProxyType[tuple[bytes, str | None], Estimate]
    workers: MappingProxyType[bytes, Estimate]
    default: Estimate

    @classmethod
    def of(
        cls,
        sizes: dict[tuple[bytes, str | None, int], Estimate],
        models: dict[tuple[bytes, str | None], Estimate],
        workers: dict[bytes, Estimate],
        default: Estimate,
    ) -> LookupTable:
        """A table over private copies of these dicts, so nobody can change it afterwards."""
        return cls(
            MappingProxyType(dict(sizes)),
            MappingProxyType(dict(models)),
            MappingProxyType(dict(workers)),
            default,
        )

    def to_json(self) -> dict[str, Any]:
        """The table as JSON: worker ids in hex, a null bucket in `models` rows."""
        return {
            "version": TABLE_VERSION,
            "default": self.default.to_json(),
            "sizes": [
                {"worker": w.hex(), "model": m, "bucket": b, **e.to_json()}
                for (w, m, b), e in self.sizes.items()
            ],
            "models": [
                {"worker": w.hex(), "model": m, **e.to_json()} for (w, m), e in self.models.items()
            ],
            "workers": [{"worker": w.hex(), **e.to_json()} for w, e in self.workers.items()],
        }

    @classmethod
    def from_json(cls, doc: Any, path: str = "table") -> LookupTable:
        """A table from `to_json`'s output, or `SchemaError` naming the field (prefixed with
        `path`, e.g. the file's name) that is wrong."""
        top = _TABLE(doc, path)
        if top["version"] != TABLE_VERSION:
            raise SchemaError(
                f"{path}.version", f"version {top['version']} is not {TABLE_VERSION}; re-export it"
            )
        default = _entry(top["default"], "default")
        sizes = {(r["worker"], r["model"], r["bucket"]): _entry(r, "table") for r in top["sizes"]}
        models = {(r["worker"], r["model"]): _entry(r, "table") for r in top["models"]}
        workers = {r["worker"]: _entry(r, "table") for r in top["workers"]}
        return cls.of(sizes, models, workers, default)


def _worker_hex(v: Any, path: str) -> Any:
    try:
        raw = bytes.fromhex(v) if type(v) is str else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != NODE_ID_BYTES:
        raise SchemaError(path, f"expected a worker id: {NODE_ID_BYTES} bytes in hex")
    return raw


_SECONDS = schema.number(0.0, 1e11)
_ESTIMATE = {
    "wait_mean": _SECONDS,
    "wait_err": _SECONDS,
    "run_mean": _SECONDS,
    "run_err": _SECONDS,
    "samples": schema.uint(),
}
_MODEL = schema.optional(schema.text(128))
_MAX_ROWS = 10_000_000
_TABLE = schema.mapping(
    {
        "version": schema.uint(),
        "default": schema.mapping(_ESTIMATE),
        "sizes": schema.list_of(
            schema.mapping(
                {"worker": _worker_hex, "model": _MODEL, "bucket": schema.uint(64), **_ESTIMATE}
            ),
            _MAX_ROWS,
        ),
        "models": schema.list_of(
            schema.mapping({"worker": _worker_hex, "model": _MODEL, **_ESTIMATE}), _MAX_ROWS
        ),
        "workers": schema.list_of(schema.mapping({"worker": _worker_hex, **_ESTIMATE}), _MAX_ROWS),
    }
)


def _entry(row: dict[str, Any], source: Source) -> Estimate:
    return Estimate(
        row["wait_mean"], row["wait_err"], row["run_mean"], row["run_err"], row["samples"], source
    )


class Predictor:
    """Expected wait and run time of a task on a worker, learned from this node's observations.

    Fallbacks, first that has data: this worker, model and size bucket ('observed'); this worker
    and model over all sizes, then this worker over all models ('worker', unscaled: a coarser
    mean whose spread includes the differences between sizes or models); the worker's own claim
    from its quote ('claimed'); the default ('default'). In `lookup_table` mode the first three
    come from the installed table ('table') and the default is the table's.
    """

    def __init__(
        self,
        *,
        alpha_min: float = 0.05,
        max_keys: int = 100_000,
        default_wait: float = 1.0,
        default_run: float = 10.0,
    ) -> None:
        if not 0.0 < alpha_min <= 1.0:
            raise ValueError(f"alpha_min must be in (0, 1], got {alpha_min!r}")
        if max_keys < 3:
            # one observation makes three keys (size, model, worker); fewer could not hold it
            raise ValueError(f"max_keys must be >= 3, got {max_keys!r}")
        self.alpha_min = alpha_min
        self.max_keys = max_keys
        # An unobserved default is as uncertain as its own size: the spread equals the mean.
        self.default = Estimate(default_wait, default_wait, default_run, default_run, 0, "default")
        # Least recently observed first, so eviction pops from the front. A coarser key is
        # touched after its finer ones, so it is never evicted while one of them remains.
        self._learned: OrderedDict[_Key, _Learned] = OrderedDict()
        self._mode: Mode = "default"
        self._table: LookupTable | None = None

    # -- learning -----------------------------------------------------------------------------

    def observe(
        self,
        worker: bytes,
        model: str | None,
        size: int,
        *,
        wait_s: float,
        run_s: float,
        now: float,
    ) -> None:
        """Learn that a task of `size` input bytes waited `wait_s` and ran `run_s` on `worker`."""
        for name, value in (("wait_s", wait_s), ("run_s", run_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        bucket = size_bucket(size)
        for key in ((worker, model, bucket), (worker, model, ANY_SIZE), (worker, None, None)):
            learned = self._learned.get(key)
            if learned is None:
                learned = self._learned[key] = _Learned()
            else:
                self._learned.move_to_end(key)
            learned.wait.add(wait_s, self.alpha_min)
            learned.run.add(run_s, self.alpha_min)
            learned.updated = now
        while len(self._learned) > self.max_keys:
            self._learned.popitem(last=False)

    def __len__(self) -> int:
        """How many learned statistics are kept (all three levels count)."""
        return len(self._learned)

    def last_observed(self, worker: bytes) -> float | None:
        """When this node last learned something of `worker` (None: nothing, or forgotten)."""
        learned = self._learned.get((worker, None, None))
        return None if learned is None else learned.updated

    # -- answering ----------------------------------------------------------------------------

    def estimate(
        self,
        worker: bytes,
        model: str | None,
        size: int,
        *,
        claimed_run: float | None = None,
        claimed_wait: float | None = None,
        claimed_wait_err: float | None = None,
    ) -> Estimate:
        """The expected wait and run of a task of `size` input bytes on `worker`.

        The claims are the worker's quote (`run_mean`, `wait_mean`, `wait_err`); a claimed run
        of 0 means "no history" there and is not used.
        """
        bucket = size_bucket(size)
        if self._mode == "lookup_table":
            table = self._table
            assert table is not None  # set_mode installs one
            found = (
                table.sizes.get((worker, model, bucket))
                or table.models.get((worker, model))
                or table.workers.get(worker)
            )
            return found or self._claimed(
                claimed_run, claimed_wait, claimed_wait_err, table.default
            )
        exact = self._learned.get((worker, model, bucket))
        if exact is not None:
            return exact.estimate("observed")
        coarser = self._learned.get((worker, model, ANY_SIZE)) or self._learned.get(
            (worker, None, None)
        )
        if coarser is not None:
            return coarser.estimate("worker")
        return self._claimed(claimed_run, claimed_wait, claimed_wait_err, self.default)

    @staticmethod
    def _claimed(
        run: float | None, wait: float | None, wait_err: float | None, default: Estimate
    ) -> Estimate:
        if (run is None or run <= 0) and wait is None:
            return default
        # A claim is unverified: its spread is taken as at least its own size, so a worker
        # cannot look certain by claiming a small error.
        if run is not None and run > 0:
            run_mean, run_err = run, run
        else:
            run_mean, run_err = default.run_mean, default.run_err
        if wait is None:
            wait_mean, wait_err_ = default.wait_mean, default.wait_err
        else:
            wait_mean, wait_err_ = wait, max(wait, wait_err or 0.0)
        return Estimate(wait_mean, wait_err_, run_mean, run_err, 0, "claimed")

    # -- modes and tables ---------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, name: str) -> None:
        """Switch to `default` (learned, live) or `lookup_table` (the installed table; if none is
        installed, the current estimates frozen into one)."""
        if name == "default":
            self._mode = "default"
        elif name == "lookup_table":
            if self._table is None:
                self._table = self.freeze()
            self._mode = "lookup_table"
        else:
            valid = ", ".join(repr(m) for m in MODES)
            raise ValueError(f"unknown predictor mode {name!r}; valid modes: {valid}")

    @property
    def table(self) -> LookupTable | None:
        return self._table

    def load_table(self, table: LookupTable) -> None:
        """Install `table`; in `lookup_table` mode it answers from the next `estimate` on."""
        self._table = table

    def freeze(self) -> LookupTable:
        """The current learned estimates, as a table (O(keys))."""
        sizes: dict[tuple[bytes, str | None, int], Estimate] = {}
        models: dict[tuple[bytes, str | None], Estimate] = {}
        workers: dict[bytes, Estimate] = {}
        for (worker, model, bucket), learned in self._learned.items():
            e = learned.estimate("table")
            if bucket is None:
                workers[worker] = e
            elif bucket == ANY_SIZE:
                models[(worker, model)] = e
            else:
                sizes[(worker, model, bucket)] = e
        return LookupTable.of(sizes, models, workers, self.default)


# -- the node's private view of each worker -------------------------------------------------------

Outcome = Literal["ok", "failed", "stalled"]


@dataclass(frozen=True, slots=True)
class LastTask:
    task: str
    at: float
    outcome: Outcome
    reason: str | None


@dataclass(slots=True)
class ModelRecord:
    """How a worker did on one model: tasks that succeeded and their mean run time."""

    count: int = 0
    mean_run: float = 0.0


@dataclass(slots=True)
class WorkerView:
    """What this node saw of one worker (never what the worker says of itself)."""

    worker: bytes
    succeeded: int = 0
    failed: int = 0  # stalls included
    stalls: int = 0  # went silent or timed out
    consecutive_bad: int = 0  # failures and stalls since the last success
    # Recent rates of failures and stalls per task, weighted max(1/n, RATE_ALPHA) per outcome and
    # decaying with time since `rates_at`; successes pull them down.
    fail_rate: float = 0.0
    stall_rate: float = 0.0
    rates_at: float = 0.0
    last_task: LastTask | None = None
    models: OrderedDict[str | None, ModelRecord] = field(default_factory=OrderedDict)
    # The breaker: None while closed; when open, skipped until then; past it, half-open.
    skip_until: float | None = None

    @property
    def tasks(self) -> int:
        return self.succeeded + self.failed


RATE_ALPHA = 0.2  # about the last ten outcomes count
STALL_WEIGHT = 2.0  # a stall costs a timeout on top of the retry, so it ranks a worker lower
MAX_MODELS = 64  # per worker
MAX_REASON = 300
RECENT_FAILURES = 200  # failures kept for the node's watchers (API, dashboard)


class WorkerViews:
    """Each worker's record, a rank penalty and a circuit breaker.

    `penalty` = 1 + fail_rate + STALL_WEIGHT × stall_rate, the rates halving every
    `rate_half_life` seconds without news. The breaker opens on `trip_consecutive` failures or
    stalls in a row, or when the recent rate of either exceeds `trip_ratio` after `trip_after`
    tasks: the worker is skipped for `cool_off` seconds, then half-open (not skipped); its next
    outcome decides: a success closes the breaker, a failure or stall opens it again.
    """

    def __init__(
        self,
        *,
        max_workers: int = 10_000,
        cool_off: float = 300.0,
        trip_consecutive: int = 3,
        trip_ratio: float = 0.5,
        trip_after: int = 5,
        rate_half_life: float = 3600.0,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
        self.max_workers = max_workers
        self.cool_off = cool_off
        self.trip_consecutive = trip_consecutive
        self.trip_ratio = trip_ratio
        self.trip_after = trip_after
        self.rate_half_life = rate_half_life
        self._views: OrderedDict[bytes, WorkerView] = OrderedDict()  # least recently seen first
        # The latest failures on any worker, newest last, for whoever watches the node.
        self.recent_failures: deque[tuple[bytes, LastTask]] = deque(maxlen=RECENT_FAILURES)

    def __len__(self) -> int:
        return len(self._views)

    def __contains__(self, worker: object) -> bool:
        return worker in self._views

    def workers(self) -> list[bytes]:
        """The workers this node has a record of, least recently seen first."""
        return list(self._views)

    def _touch(self, worker: bytes) -> WorkerView:
        v = self._views.get(worker)
        if v is None:
            v = self._views[worker] = WorkerView(worker)
            while len(self._views) > self.max_workers:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(worker)
        return v

    def _decay(self, v: WorkerView, now: float) -> float:
        if self.rate_half_life <= 0 or now <= v.rates_at:
            return 1.0
        return float(0.5 ** ((now - v.rates_at) / self.rate_half_life))

    def _record(self, v: WorkerView, failed: bool, stalled: bool, now: float) -> None:
        keep = self._decay(v, now)
        w = max(RATE_ALPHA, 1.0 / v.tasks)  # v.tasks already counts this outcome
        v.fail_rate = v.fail_rate * keep * (1 - w) + (w if failed and not stalled else 0.0)
        v.stall_rate = v.stall_rate * keep * (1 - w) + (w if stalled else 0.0)
        v.rates_at = max(v.rates_at, now)

    def succeeded(
        self, worker: bytes, model: str | None, run_s: float, task: str, *, now: float
    ) -> None:
        """`worker` ran `task` (of `model`) to a verified result in `run_s` seconds."""
        v = self._touch(worker)
        v.succeeded += 1
        v.consecutive_bad = 0
        v.skip_until = None
        self._record(v, failed=False, stalled=False, now=now)
        v.last_task = LastTask(task, now, "ok", None)
        rec = v.models.get(model)
        if rec is None:
            rec = v.models[model] = ModelRecord()
            while len(v.models) > MAX_MODELS:
                v.models.popitem(last=False)
        else:
            v.models.move_to_end(model)
        rec.count += 1
        rec.mean_run += (run_s - rec.mean_run) / rec.count

    def failed(
        self, worker: bytes, task: str, reason: str, *, now: float, stalled: bool = False
    ) -> None:
        """`task` failed on `worker` (`stalled`: it went silent or timed out)."""
        v = self._touch(worker)
        v.failed += 1
        v.stalls += int(stalled)
        v.consecutive_bad += 1
        self._record(v, failed=True, stalled=stalled, now=now)
        v.last_task = LastTask(task, now, "stalled" if stalled else "failed", reason[:MAX_REASON])
        self.recent_failures.append((worker, v.last_task))
        bad_rate = v.fail_rate + v.stall_rate
        if (
            v.skip_until is not None  # open or half-open: this was its chance
            or v.consecutive_bad >= self.trip_consecutive
            or (v.tasks >= self.trip_after and bad_rate > self.trip_ratio)
        ):
            v.skip_until = now + self.cool_off

    def penalty(self, worker: bytes, now: float) -> float:
        """A multiplier >= 1 on the worker's cost or time when ranking it (1: nothing against
        it, or never seen)."""
        v = self._views.get(worker)
        if v is None:
            return 1.0
        keep = self._decay(v, now)
        return 1.0 + keep * (v.fail_rate + STALL_WEIGHT * v.stall_rate)

    def skipped(self, worker: bytes, now: float) -> bool:
        """Whether to leave `worker` out: its breaker is open and the cool-off not over."""
        v = self._views.get(worker)
        return v is not None and v.skip_until is not None and now < v.skip_until

    def state(self, worker: bytes, now: float) -> Literal["closed", "open", "half-open"]:
        v = self._views.get(worker)
        if v is None or v.skip_until is None:
            return "closed"
        return "open" if now < v.skip_until else "half-open"

    def view(self, worker: bytes, now: float | None = None) -> dict[str, Any]:
        """The worker's record as JSON (ids in hex); with `now`, its breaker state and penalty
        too. `KeyError` for a worker not on record."""
        v = self._views.get(worker)
        if v is None:
            raise KeyError(f"no record of worker {worker.hex()}")
        last = v.last_task
        out: dict[str, Any] = {
            "worker": v.worker.hex(),
            "succeeded_tasks": v.succeeded,
            "failed_tasks": v.failed,
            "stalls": v.stalls,
            "consecutive_failures": v.consecutive_bad,
            "last_task": None
            if last is None
            else {"task": last.task, "at": last.at, "outcome": last.outcome, "reason": last.reason},
            "performance": {
                "models": [
                    {"model": m, "count": r.count, "mean_run": r.mean_run}
                    for m, r in v.models.items()
                ]
            },
            "skipped_until": v.skip_until,
        }
        if now is not None:
            out["state"] = self.state(worker, now)
            out["penalty"] = self.penalty(worker, now)
        return out
