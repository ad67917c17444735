"""The node's private record of each worker, `WorkerViews`: outcomes, per-model run times, stalls,
a rank penalty, and a circuit breaker that skips a worker that keeps failing. Sans-I/O: time
comes in as `now`.

Promises: a record holds only what this node saw (never what the worker says of itself); memory
stays within `max_workers` records, MAX_MODELS models each and RECENT_FAILURES failures.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

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
    verified: int = 0  # results that agreed with another worker's
    disputed: int = 0  # results that disagreed with the one kept
    clean: int = 0  # results verified since its last dispute
    duration_mismatches: int = 0  # receipts claiming a run time far from the one measured
    challenges_passed: int = 0
    challenges_failed: int = 0
    disputed_until: float | None = None  # skipped for its disputes until then: no success ends it
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
        if v is not None and v.disputed_until is not None and now < v.disputed_until:
            return True
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

    # -- verified results (a minimal record; the reputation's full rules come with its store)

    def verified(self, worker: bytes, task: str, *, now: float) -> None:
        v = self._touch(worker)
        v.verified += 1
        v.clean += 1

    def disputed(self, worker: bytes, task: str, reason: str, *, now: float) -> None:
        v = self._touch(worker)
        v.disputed += 1
        v.clean = 0
        v.disputed_until = now + self.cool_off

    def duration_mismatch(
        self, worker: bytes, task: str, claimed_s: float, measured_s: float, *, now: float
    ) -> None:
        self._touch(worker).duration_mismatches += 1

    def challenged(self, worker: bytes, passed: bool, reason: str | None, *, now: float) -> None:
        v = self._touch(worker)
        if passed:
            v.challenges_passed += 1
        else:
            v.challenges_failed += 1

    def clean(self, worker: bytes) -> int:
        v = self._views.get(worker)
        return 0 if v is None else v.clean

    def disputes(self, worker: bytes) -> int:
        v = self._views.get(worker)
        return 0 if v is None else v.disputed

    def capacity(self, worker: bytes) -> str:
        v = self._views.get(worker)
        if v is None or not (v.challenges_passed or v.challenges_failed):
            return "unknown"
        return "failed" if v.challenges_failed else "passed"
