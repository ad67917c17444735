"""The node's private record of each worker, `WorkerViews`: outcomes, per-model run times, stalls,
a rank penalty, a circuit breaker that skips a worker that keeps failing, and its reputation:
results verified and disputed, run times it misreported, capacity challenges passed and failed,
which bar it for `ReputationRules.skip_s` past a threshold. Sans-I/O: time comes in as `now`.

Promises: a record holds only what this node saw (never what the worker says of itself); memory
stays within `max_workers` records, MAX_MODELS models each and RECENT_FAILURES failures; what
must outlive the process (`Reputation`, the store's row of it) is handed out by `changed` once
per change and taken back by `load`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from p2psched.store.journal import Forgotten, Reputation

Outcome = Literal["ok", "failed", "stalled"]
Capacity = Literal["passed", "failed", "unknown"]
_CAPACITIES: dict[str, Capacity] = {"passed": "passed", "failed": "failed"}  # else "unknown"


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
    # Its reputation: what checking its results and its claims found.
    verified: int = 0  # results that agreed with the canonical one
    disputed: int = 0  # ... that disagreed
    clean: int = 0  # verified since its last dispute
    duration_mismatches: int = 0  # receipts whose run time was far from the one measured
    challenges_passed: int = 0
    challenges_failed: int = 0
    capacity: Capacity = "unknown"  # its last capacity challenge
    strikes: int = 0  # disputes since it was last barred
    challenge_strikes: int = 0  # failed challenges since it was last barred
    # Barred (skipped, whatever its breaker says) until then, for `barred_for`.
    barred_until: float | None = None
    barred_for: str | None = None
    updated_at: float = 0.0  # when any of the above last changed

    @property
    def tasks(self) -> int:
        return self.succeeded + self.failed


RATE_ALPHA = 0.2  # about the last ten outcomes count
STALL_WEIGHT = 2.0  # a stall costs a timeout on top of the retry, so it ranks a worker lower
MAX_MODELS = 64  # per worker
MAX_REASON = 300
RECENT_FAILURES = 200  # failures kept for the node's watchers (API, dashboard)
# A dispute adds DISPUTE_WEIGHT to the penalty, a failed capacity challenge (its last one)
# CHALLENGE_WEIGHT, a misreported run time MISMATCH_WEIGHT; disputes and mismatches weigh less
# as clean results accrue after them: × FORGIVE / (FORGIVE + results verified since).
DISPUTE_WEIGHT = 2.0
CHALLENGE_WEIGHT = 2.0
MISMATCH_WEIGHT = 0.1
FORGIVE = 20


@dataclass(frozen=True, slots=True)
class ReputationRules:
    """When a worker's reputation bars it (the operator's [reputation] table): after
    `max_disputes` disputed results, or `max_failed_challenges` failed capacity challenges,
    since it was last barred, for `skip_s` seconds (0 of either: never barred for it)."""

    max_disputes: int = 1
    skip_s: float = 604_800.0  # a week
    max_failed_challenges: int = 1


DEFAULT_RULES = ReputationRules()


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
        rules: ReputationRules = DEFAULT_RULES,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
        self.rules = rules
        self.max_workers = max_workers
        self.cool_off = cool_off
        self.trip_consecutive = trip_consecutive
        self.trip_ratio = trip_ratio
        self.trip_after = trip_after
        self.rate_half_life = rate_half_life
        self._views: OrderedDict[bytes, WorkerView] = OrderedDict()  # least recently seen first
        # The latest failures on any worker, newest last, for whoever watches the node.
        self.recent_failures: deque[tuple[bytes, LastTask]] = deque(maxlen=RECENT_FAILURES)
        # Workers whose `Reputation` changed since `changed` last handed them out, and those
        # dropped from memory since (their rows go too: the store holds what memory holds).
        self._dirty: set[bytes] = set()
        self._dropped: dict[bytes, None] = {}  # (an ordered set, bounded as the records are)

    def __len__(self) -> int:
        return len(self._views)

    def __contains__(self, worker: object) -> bool:
        return worker in self._views

    def workers(self) -> list[bytes]:
        """The workers this node has a record of, least recently seen first."""
        return list(self._views)

    def _touch(self, worker: bytes, now: float) -> WorkerView:
        v = self._views.get(worker)
        if v is None:
            self._dropped.pop(worker, None)
            while len(self._views) >= self.max_workers:  # (room made before it comes in)
                dropped = self._drop_one(now)
                self._dirty.discard(dropped)
                self._dropped[dropped] = None
                if len(self._dropped) > self.max_workers:  # (nobody takes them: no store)
                    del self._dropped[next(iter(self._dropped))]
            v = self._views[worker] = WorkerView(worker)
        else:
            self._views.move_to_end(worker)
        return v

    def _drop_one(self, now: float) -> bytes:
        """Drop the longest unseen record, passing over those barred (each then counts as
        seen): forgetting one would lift its bar, and a barred worker, given no tasks, is
        never seen. The oldest goes if all are barred."""
        for _ in range(len(self._views)):
            oldest, v = next(iter(self._views.items()))
            if v.barred_until is None or now >= v.barred_until:
                break
            self._views.move_to_end(oldest)
        dropped, _ = self._views.popitem(last=False)
        return dropped

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
        v = self._touch(worker, now)
        self._changed(v, now)
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
        v = self._touch(worker, now)
        self._changed(v, now)
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

    # -- its reputation: what checking its results and claims found --------------------------

    def _changed(self, v: WorkerView, now: float) -> None:
        self._dirty.add(v.worker)
        v.updated_at = max(v.updated_at, now)

    def _bar(self, v: WorkerView, why: str, now: float) -> None:
        v.strikes = v.challenge_strikes = 0
        v.barred_until = max(v.barred_until or 0.0, now + self.rules.skip_s)
        v.barred_for = why[:MAX_REASON]

    def verified(self, worker: bytes, task: str, *, now: float) -> None:
        """`worker`'s result for `task` agreed with the canonical one."""
        v = self._touch(worker, now)
        self._changed(v, now)
        v.verified += 1
        v.clean += 1

    def disputed(self, worker: bytes, task: str, reason: str, *, now: float) -> None:
        """`worker`'s result for `task` disagreed with the canonical one (`reason`: how)."""
        v = self._touch(worker, now)
        self._changed(v, now)
        v.disputed += 1
        v.clean = 0
        v.strikes += 1
        if 0 < self.rules.max_disputes <= v.strikes:
            self._bar(v, f"its result for task {task} was disputed: {reason}", now)

    def duration_mismatch(
        self, worker: bytes, task: str, claimed_s: float, measured_s: float, *, now: float
    ) -> None:
        """`worker`'s receipt for `task` claimed a run time far from the one measured."""
        v = self._touch(worker, now)
        self._changed(v, now)
        v.duration_mismatches += 1

    def challenged(self, worker: bytes, passed: bool, reason: str | None, *, now: float) -> None:
        """`worker` passed or failed a capacity challenge (`reason`: why it failed)."""
        v = self._touch(worker, now)
        self._changed(v, now)
        v.capacity = "passed" if passed else "failed"
        if passed:
            v.challenges_passed += 1
            return
        v.challenges_failed += 1
        v.challenge_strikes += 1
        if 0 < self.rules.max_failed_challenges <= v.challenge_strikes:
            self._bar(v, f"it failed a capacity challenge: {reason or 'no reason given'}", now)

    def clean(self, worker: bytes) -> int:
        """Results of `worker` verified since its last dispute (0 if unknown)."""
        v = self._views.get(worker)
        return 0 if v is None else v.clean

    def disputes(self, worker: bytes) -> int:
        """Disputed results of `worker` on record."""
        v = self._views.get(worker)
        return 0 if v is None else v.disputed

    def capacity(self, worker: bytes) -> Capacity:
        """How `worker`'s last capacity challenge went ("unknown": none on record)."""
        v = self._views.get(worker)
        return "unknown" if v is None else v.capacity

    def barred(self, worker: bytes, now: float) -> str | None:
        """Why `worker` is skipped for its reputation, and how much longer ("skipped for 6 d 23 h
        more: its result for task t was disputed: ..."), or None while it is not."""
        v = self._views.get(worker)
        if v is None or v.barred_until is None or now >= v.barred_until:
            return None
        return f"skipped for {_span(v.barred_until - now)} more: {v.barred_for}"

    def changed(self) -> list[Reputation | Forgotten]:
        """What changed of the workers' reputations since the last call, as the store keeps
        it: one entry per worker however many times it changed."""
        out: list[Reputation | Forgotten] = [Forgotten(w) for w in self._dropped]
        out += [_reputation(self._views[w]) for w in self._dirty]
        self._dirty.clear()
        self._dropped.clear()
        return out

    def load(self, records: list[Reputation]) -> None:
        """Take back what the store kept (a node restarted), the least recently updated first;
        not marked changed."""
        for r in sorted(records, key=lambda r: r.updated_at):
            v = self._touch(r.worker, r.updated_at)
            v.succeeded, v.failed, v.stalls = r.succeeded, r.failed, r.stalls
            v.verified, v.disputed, v.clean = r.verified, r.disputed, r.clean
            v.duration_mismatches = r.duration_mismatches
            v.challenges_passed, v.challenges_failed = r.challenges_passed, r.challenges_failed
            v.capacity = _CAPACITIES.get(r.capacity, "unknown")
            v.strikes, v.challenge_strikes = r.strikes, r.challenge_strikes
            v.barred_until, v.barred_for = r.skip_until, r.skip_reason
            v.updated_at = r.updated_at
        self._dirty.clear()
        self._dropped.clear()

    # -- ranking ------------------------------------------------------------------------------

    def penalty(self, worker: bytes, now: float) -> float:
        """A multiplier >= 1 on the worker's cost or time when ranking it (1: nothing against
        it, or never seen): its recent failures and stalls, its disputes and misreported run
        times (weighing less as verified results accrue after them), and a failed last
        capacity challenge."""
        v = self._views.get(worker)
        if v is None:
            return 1.0
        keep = self._decay(v, now)
        forgive = FORGIVE / (FORGIVE + v.clean)
        return (
            1.0
            + keep * (v.fail_rate + STALL_WEIGHT * v.stall_rate)
            + forgive * (DISPUTE_WEIGHT * v.disputed + MISMATCH_WEIGHT * v.duration_mismatches)
            + (CHALLENGE_WEIGHT if v.capacity == "failed" else 0.0)
        )

    def skipped(self, worker: bytes, now: float) -> bool:
        """Whether to leave `worker` out: its breaker is open and the cool-off not over, or its
        reputation bars it (see `barred`)."""
        v = self._views.get(worker)
        return v is not None and (
            (v.skip_until is not None and now < v.skip_until)
            or (v.barred_until is not None and now < v.barred_until)
        )

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
            "reputation": {
                "verified": v.verified,
                "disputed": v.disputed,
                "clean": v.clean,
                "duration_mismatches": v.duration_mismatches,
                "challenges_passed": v.challenges_passed,
                "challenges_failed": v.challenges_failed,
                "capacity": v.capacity,
                "barred_until": v.barred_until,
                "barred_for": v.barred_for,
            },
        }
        if now is not None:
            out["state"] = self.state(worker, now)
            out["penalty"] = self.penalty(worker, now)
            out["reputation"]["barred"] = self.barred(worker, now) is not None
        return out


def _reputation(v: WorkerView) -> Reputation:
    return Reputation(
        worker=v.worker,
        succeeded=v.succeeded,
        failed=v.failed,
        stalls=v.stalls,
        verified=v.verified,
        disputed=v.disputed,
        clean=v.clean,
        duration_mismatches=v.duration_mismatches,
        challenges_passed=v.challenges_passed,
        challenges_failed=v.challenges_failed,
        capacity=v.capacity,
        strikes=v.strikes,
        challenge_strikes=v.challenge_strikes,
        skip_until=v.barred_until,
        skip_reason=v.barred_for,
        updated_at=v.updated_at,
    )


def _span(seconds: float) -> str:
    """A length of time as people say it: "6 d 23 h", "12 min"."""
    if seconds >= 86_400:
        return f"{seconds // 86_400:.0f} d {seconds % 86_400 // 3600:.0f} h"
    if seconds >= 3600:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    return f"{seconds // 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
