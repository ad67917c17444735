"""What this node expects of each worker, learned from what it saw: `Predictor` (wait and run time
per worker, model and input size, as mean ± spread; and run time per worker and model as a line
in the task's token counts, where its metadata tells them). Sans-I/O: time comes in as `now`;
nothing here reads a clock or a file.

Owns: the learned statistics and token fits, and the `LookupTable` installed or frozen from
them. Promises: `estimate` always answers (fitted on tokens, observed, then coarser
observations of the same worker, then the worker's claim, then a default) and says which in
`source`; in `lookup_table` mode it answers from the table alone, while observations keep the
learned model current; memory stays within `max_keys` learned statistics and `max_fits` fits.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Literal

from p2psched.scheduler.estimate import Estimate, Source, Tokens, size_bucket
from p2psched.scheduler.lookup_table import LookupTable
from p2psched.scheduler.token_fit import TokenFit

MODES = ("default", "lookup_table")
Mode = Literal["default", "lookup_table"]

ANY_SIZE = -1  # the bucket of a statistic over every input size
# A fit answers once it rests on this many tasks: three determine its line, the rest are
# needed to judge how far off it is (its spread).
MIN_FIT_SAMPLES = 10


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


class Predictor:
    """Expected wait and run time of a task on a worker, learned from this node's observations.

    A task whose metadata tells its tokens gets its run time from the (worker, model) token fit
    once that rests on `MIN_FIT_SAMPLES` tasks ('fitted'; its wait as below). The `hardware`
    a task's metadata may name is not a key: the worker is, and a worker's hardware is its own
    (its ad says it), so a task's guess of where it will run adds nothing to a fit per worker.

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
        forgetting: float = 0.99,
        max_keys: int = 100_000,
        max_fits: int = 10_000,  # (a fit is about 800 bytes, a learned statistic 300)
        default_wait: float = 1.0,
        default_run: float = 10.0,
    ) -> None:
        if not 0.0 < alpha_min <= 1.0:
            raise ValueError(f"alpha_min must be in (0, 1], got {alpha_min!r}")
        if max_keys < 3:
            # one observation makes three keys (size, model, worker); fewer could not hold it
            raise ValueError(f"max_keys must be >= 3, got {max_keys!r}")
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting!r}")
        if max_fits < 1:
            raise ValueError(f"max_fits must be >= 1, got {max_fits!r}")
        self.alpha_min = alpha_min
        self.forgetting = forgetting
        self.max_keys = max_keys
        self.max_fits = max_fits
        # An unobserved default is as uncertain as its own size: the spread equals the mean.
        self.default = Estimate(default_wait, default_wait, default_run, default_run, 0, "default")
        # Least recently observed first, so eviction pops from the front. A coarser key is
        # touched after its finer ones, so it is never evicted while one of them remains.
        self._learned: OrderedDict[_Key, _Learned] = OrderedDict()
        self._fits: OrderedDict[tuple[bytes, str | None], TokenFit] = OrderedDict()
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
        tokens: Tokens | None = None,
    ) -> None:
        """Learn that a task of `size` input bytes (and `tokens`, if its metadata told them)
        waited `wait_s` and ran `run_s` on `worker`.

        The tokens are those told before it ran (the output asked for, not the output made):
        what a task to be placed tells too, so the fit predicts from what it will be given."""
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
        if tokens is not None:
            fit = self._fits.get((worker, model))
            if fit is None:
                fit = self._fits[(worker, model)] = TokenFit(self.forgetting, self.alpha_min)
            else:
                self._fits.move_to_end((worker, model))
            fit.add(tokens, run_s)
            while len(self._fits) > self.max_fits:
                self._fits.popitem(last=False)

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
        tokens: Tokens | None = None,
    ) -> Estimate:
        """The expected wait and run of a task of `size` input bytes (and `tokens`, if its
        metadata tells them) on `worker`.

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
        base = self._learned_estimate(worker, model, bucket)
        if base is None:
            base = self._claimed(claimed_run, claimed_wait, claimed_wait_err, self.default)
        fit = self._fits.get((worker, model)) if tokens is not None else None
        if fit is None or fit.n < MIN_FIT_SAMPLES:
            return base
        assert tokens is not None
        return Estimate(
            base.wait_mean, base.wait_err, fit.predict(tokens), fit.err, fit.n, "fitted"
        )

    def _learned_estimate(self, worker: bytes, model: str | None, bucket: int) -> Estimate | None:
        exact = self._learned.get((worker, model, bucket))
        if exact is not None:
            return exact.estimate("observed")
        coarser = self._learned.get((worker, model, ANY_SIZE)) or self._learned.get(
            (worker, None, None)
        )
        return None if coarser is None else coarser.estimate("worker")

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

    def set_mode(self, name: str, table: Any = None) -> None:
        """Switch to `default` (learned, live) or `lookup_table` (the installed table; if none is
        installed, the current estimates frozen into one). `table`, only with `lookup_table`:
        a table's JSON (as `LookupTable.to_json` writes it) to install first; one that is wrong
        is refused (`SchemaError`, naming its field) and changes nothing."""
        if name not in MODES:
            valid = ", ".join(repr(m) for m in MODES)
            raise ValueError(f"unknown predictor mode {name[:64]!r}; valid modes: {valid}")
        if table is not None:
            if name != "lookup_table":
                raise ValueError(f"table: loaded only with mode 'lookup_table', not {name!r}")
            self._table = LookupTable.from_json(table, "table")
        if name == "lookup_table" and self._table is None:
            self._table = self.freeze()
        self._mode = "default" if name == "default" else "lookup_table"

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
