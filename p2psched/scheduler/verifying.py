"""Verification in the scheduler's trio shell: the part of `Dispatcher` (which is made of it)
that carries out what a job's verified results ask of it: the compare command run on two
results (`Compare`), and capacity challenges (`Challenge`, or by hand): a
`scheduler.challenge.CapacityChallenge` over a worker's link, dialled if no job has it.

Owns: the challenges under way (one per worker at a time: a second ask waits for the first's
verdict), their timers, and what a verdict changes (the worker's record in `views`, each job
run told).
Promises: a challenge's messages go to it and to no job's run; a challenge ends (passed, failed
or refused) by its deadline, or when its link goes; the commitment is journaled before the ask
is sent; opened rows are checked in a thread, one challenge's at a time, never on the node's.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from p2psched.identity import Identity
from p2psched.resources.challenge import TARGET_S, size_for, time_limit
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.challenge import (
    DEFAULT_ROWS,
    GRACE_S,
    CapacityChallenge,
    CapacityVerdict,
)
from p2psched.scheduler.compare import compare_results
from p2psched.scheduler.run import Compare, Spooled, TaskRun
from p2psched.scheduler.run.agreement import json_agree
from p2psched.scheduler.worker_views import WorkerViews
from p2psched.store import Store
from p2psched.store.journal import Entry
from p2psched.wire.messages import (
    MAX_CHALLENGE_N,
    MAX_CHALLENGE_ROWS,
    MIN_CHALLENGE_N,
    ChallengeRows,
    Message,
)

log = logging.getLogger(__name__)
MAX_ADS_KEPT = 10_000  # workers' ads kept for watchers, the least recently refreshed dropped
# Challenges' opened rows checked at once in the process (two n x n matrices each, in a thread).
_ROW_CHECKS: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("row_checks")


class UnknownWorker(LookupError):
    """A worker to challenge whose ad this node has not seen (so neither where it is nor
    what it claims)."""


@dataclass(slots=True)
class Underway:
    """A capacity challenge under way on a worker's link."""

    core: CapacityChallenge | None = None  # None while its link comes up
    kick: trio.Event = field(default_factory=trio.Event)  # an answer came, or the link went
    heard: list[tuple[Message, float]] = field(default_factory=list)  # answers, when they came
    done: trio.Event = field(default_factory=trio.Event)
    verdict: CapacityVerdict | None = None


class _Link(Protocol):
    settled: trio.Event
    public_key: bytes | None
    ended: str | None


class _Dispatcher(Protocol):
    """What of the `Dispatcher` its verification uses."""

    @property
    def identity(self) -> Identity: ...
    @property
    def ads(self) -> OrderedDict[bytes, WorkerAd]: ...
    @property
    def views(self) -> WorkerViews: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def rids(self) -> Iterator[int]: ...
    @property
    def _challenges(self) -> dict[bytes, Underway]: ...
    @property
    def _nursery(self) -> trio.Nursery | None: ...
    @property
    def _jobs(self) -> dict[str, Any]: ...
    @property
    def store(self) -> Store | None: ...
    @property
    def _links(self) -> dict[bytes, Any]: ...
    @property
    def _compares(self) -> trio.CapacityLimiter: ...

    def record(self, entries: list[Entry]) -> None: ...
    def _send(self, worker: bytes, message: Message) -> None: ...
    def _open_link(self, worker: bytes, addresses: tuple[str, ...]) -> Any: ...
    def _idle(self, worker: bytes, link: Any) -> None: ...
    def _flush(self, job_id: str, *, kick: bool = True) -> None: ...
    def _guarded(self, job_id: str, step: Callable[..., None], *args: Any) -> None: ...
    def _tell_jobs(self, worker: bytes, now: float) -> None: ...
    def _output(self, job_id: str, t: TaskRun) -> Any: ...
    async def challenge(
        self,
        worker: bytes,
        *,
        n: int | None = None,
        rows: int = ...,
        connect_s: float = ...,
        most_s: float = ...,
    ) -> CapacityVerdict: ...


class Verifying:
    """A `Dispatcher`'s verification (its base: `self` is the dispatcher)."""

    async def _compare(self: _Dispatcher, job_id: str, action: Compare) -> None:
        """Run the job's compare command on two of its results, and tell its run."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        async with self._compares:  # (each reads two results, and starts a program)
            values = [self._output(job_id, job.run.tasks[tid]) for tid in (action.a, action.b)]
            same: bool | None
            if action.command is None:  # json, too large for the run to hold: the rule here
                same, error = json_agree(values[0], values[1], job.run.verify.tolerance), ""
            else:
                same, error = await compare_results(action.command, *values)
        job = self._jobs.get(job_id)
        if job is not None:
            job.run.compared(action.a, action.b, same, self.clock(), error)
            self._flush(job_id)

    def _output(self: _Dispatcher, job_id: str, t: TaskRun) -> Any:
        """A task's output: in memory, or (too large to keep there) in the store."""
        if t.output is not Spooled.IN_STORE:
            return t.output
        assert self.store is not None  # (a run without one keeps every output)
        return self.store.stored_value(job_id, t.spec.task_id)

    def saw(self: _Dispatcher, ads: list[WorkerAd]) -> None:
        """Keep the newest of these ads of each worker (for watchers, and for challenges)."""
        for ad in ads:
            if ad.node_id not in self.ads or self.ads[ad.node_id].seq < ad.seq:
                self.ads[ad.node_id] = ad
                self.ads.move_to_end(ad.node_id)
        while len(self.ads) > MAX_ADS_KEPT:
            self.ads.popitem(last=False)

    async def challenge(
        self: _Dispatcher,
        worker: bytes,
        *,
        n: int | None = None,
        rows: int = DEFAULT_ROWS,
        connect_s: float = 30.0,
        most_s: float = math.inf,
    ) -> CapacityVerdict:
        """Challenge the capacity `worker`'s ad claims (`scheduler.challenge`), over its link
        (dialled for it if no job has one): one n x n product, or (`n` None) products sized
        from the ad (`size_for`: n up to 4096, then as many rounds as its claim needs, fewer
        if their time limit would pass `most_s`), `rows` rows opened. One at a time per
        worker: a call while one runs gets its verdict. A verdict that says anything of its
        capacity (not a refusal) goes into its record (`views.challenged`), which all the
        node's jobs read. `UnknownWorker` if no ad of it was found; `ValueError` for `n` or
        `rows` out of bounds, or an `n` whose product its ad gives more than `most_s`
        seconds."""
        running = self._challenges.get(worker)
        if running is not None:
            await running.done.wait()
            assert running.verdict is not None
            return running.verdict
        ad = self.ads.get(worker)
        if ad is None:
            raise UnknownWorker(
                f"no ad of worker {worker.hex()} has been found by this node "
                "(`p2psched workers` lists those it knows)"
            )
        rounds = 1
        if n is None:
            n, rounds = size_for(ad.profile, TARGET_S)
            while rounds > 1 and time_limit(ad.profile, n, rounds, GRACE_S) > most_s:
                rounds -= 1
        if not MIN_CHALLENGE_N <= n <= MAX_CHALLENGE_N or not 1 <= rows <= min(
            n, MAX_CHALLENGE_ROWS
        ):
            raise ValueError(
                f"n must be {MIN_CHALLENGE_N}..{MAX_CHALLENGE_N} and rows 1..min(n, "
                f"{MAX_CHALLENGE_ROWS}), not n={n}, rows={rows}"
            )
        if (limit := time_limit(ad.profile, n, rounds, GRACE_S)) > most_s:
            raise ValueError(
                f"n={n}: its ad gives this worker up to {limit:.0f} s for the product, over "
                f"the {most_s:g} s a challenge may take here: ask for a smaller n"
            )
        entry = self._challenges[worker] = Underway()
        try:
            entry.verdict = await _run(self, worker, ad, (n, rounds), rows, connect_s, entry)
        finally:
            del self._challenges[worker]
            entry.done.set()
            if (link := self._links.get(worker)) is not None:
                self._idle(worker, link)
        verdict = entry.verdict
        now = self.clock()
        if not verdict.refused:
            self.views.challenged(worker, verdict.passed, verdict.reason, now=now)
            self.record([])  # (the record on disk now: a restart remembers the verdict)
        self._tell_jobs(worker, now)
        log.log(
            logging.INFO if verdict.passed else logging.WARNING,
            "capacity challenge of worker %s: %s",
            worker.hex()[:16],
            "passed" if verdict.passed else verdict.reason,
            extra={"worker": worker.hex()},
        )
        return verdict

    def challenge_for_jobs(self: _Dispatcher, worker: bytes) -> None:
        """A job's run needs `worker`'s capacity checked before it gives it tasks (its
        `Challenge` action): a challenge starts unless one runs, and every run hears
        (`challenged`) when it ends."""
        if worker not in self._challenges and self._nursery is not None:
            self._nursery.start_soon(_for_jobs, self, worker)

    def _tell_jobs(self: _Dispatcher, worker: bytes, now: float) -> None:
        """Each job's run hears that a challenge of `worker` ended (the verdict is in
        `views`, which they read)."""
        for job_id, job in list(self._jobs.items()):
            self._guarded(job_id, job.run.challenged, worker, now)
            self._flush(job_id)

    def _challenge_takes(self: _Dispatcher, worker: bytes, m: Message) -> bool:
        """Whether `m` answers the challenge under way on `worker`."""
        underway = self._challenges.get(worker)
        return underway is not None and underway.core is not None and underway.core.takes(m)

    def _challenge_heard(self: _Dispatcher, worker: bytes, m: Message | None, now: float) -> None:
        """`worker` sent `m` for its challenge, or (None) its link went. (A challenge's message
        that no challenge waits for is dropped.)"""
        underway = self._challenges.get(worker)
        if underway is None:
            return
        if m is not None and underway.core is not None and underway.core.takes(m):
            underway.heard.append((m, now))  # (taken by its challenge's task, in turn)
        underway.kick.set()


async def _run(
    d: _Dispatcher,
    worker: bytes,
    ad: WorkerAd,
    size: tuple[int, int],  # n, rounds
    rows: int,
    connect_s: float,
    entry: Underway,
) -> CapacityVerdict:
    n, rounds = size
    link: _Link = d._open_link(worker, ad.profile.addresses)
    with trio.move_on_after(connect_s):
        await link.settled.wait()
    if link.public_key is None or link.ended is not None:
        why = link.ended or f"not reached within {connect_s:g} s"
        reason = f"the worker could not be reached: {why}"
        return CapacityVerdict(
            worker, False, reason, n, rows, 0.0, 0.0, None, None, 0.0, True, rounds
        )
    core = entry.core = CapacityChallenge(
        d.identity,
        worker,
        link.public_key,
        ad.profile,
        next(d.rids),
        d.clock(),
        n=n,
        rows=rows,
        rounds=rounds,
    )
    while True:
        d.record(core.journal)  # (the commitment before the ask that carries it)
        for send in core.actions():
            d._send(worker, send.message)
        if core.verdict is not None:
            return core.verdict
        if link.ended is not None:
            core.abandon(f"the channel to it ended: {link.ended}")
            continue
        with trio.move_on_at(trio.current_time() + core.next_deadline() - d.clock()):
            await entry.kick.wait()
        entry.kick = trio.Event()
        heard, entry.heard = entry.heard, []
        for m, at in heard:
            if isinstance(m, ChallengeRows):  # (the matrices and rows: seconds of numpy at n=4096)
                async with _row_checks():
                    await trio.to_thread.run_sync(core.receive, m, at)
            else:
                core.receive(m, at)
        core.tick(d.clock())


def _row_checks() -> trio.CapacityLimiter:
    """The process's limiter of row checks (one per trio run: a test's runs each have theirs)."""
    try:
        return _ROW_CHECKS.get()
    except LookupError:
        _ROW_CHECKS.set(limiter := trio.CapacityLimiter(1))
        return limiter


async def _for_jobs(d: _Dispatcher, worker: bytes) -> None:
    try:
        await d.challenge(worker)
    except (UnknownWorker, ValueError) as e:
        log.warning("cannot challenge worker %s: %s", worker.hex()[:16], e)
        d._tell_jobs(worker, d.clock())
