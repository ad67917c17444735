"""A `Dispatcher`'s steps: what its jobs' runs ask for, carried out with group commit.

Owns: which jobs were stepped since the end of the last step of the shell, and carrying out
their actions (sends, dials, closes, settled tasks, discovery, compares, challenges).
Promises: a step's journals (every job's run stepped in it, and the workers' records changed)
are made durable in one transaction before any of what they caused goes out; a job whose
tasks are all final is ended (its `done` set) once it asks for nothing more.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import trio

from p2psched.scheduler.run import (
    Action,
    Challenge,
    Close,
    Compare,
    Connect,
    Discover,
    JobRun,
    Send,
    Settled,
    Streamed,
)
from p2psched.store.journal import Entry
from p2psched.wire.messages import Commit, Message, QuoteRequest, Reserve, Unreserve, Withdraw

log = logging.getLogger("p2psched.scheduler.service")
# Requests a worker answers by their request id: the answer goes to the job that asked.
ANSWERED = (QuoteRequest, Commit, Reserve, Withdraw)


class _Dispatcher(Protocol):
    """What of the `Dispatcher` its steps use."""

    _jobs: dict[str, Any]
    _links: dict[bytes, Any]
    _dirty: dict[str, bool]
    _step_end: trio.Event
    _kick: trio.Event
    _waking_at: float
    _nursery: trio.Nursery | None
    _rid_owner: dict[tuple[bytes, int], str]
    _watchers: dict[str, tuple[Callable[[Any], None], Callable[[], None]]]
    ended_failures: deque[tuple[str, str, float]]

    def record(self, entries: list[Entry]) -> None: ...
    def _send(self, worker: bytes, message: Message) -> None: ...
    def _connect(self, job_id: str, worker: bytes, addresses: tuple[str, ...]) -> None: ...
    def _close(self, worker: bytes, reason: str, *, when_written: bool = False) -> None: ...
    def _idle(self, worker: bytes, link: Any) -> None: ...
    def _start_discovery(self, job_id: str) -> None: ...
    async def _compare(self, job_id: str, action: Compare) -> None: ...
    def challenge_for_jobs(self, worker: bytes) -> None: ...
    def _flush(self, job_id: str, *, kick: bool = True) -> None: ...
    def _carry_out(self) -> None: ...
    def _act(self, job_id: str, job: Any, actions: list[Action]) -> None: ...
    def _quiet(self, job_id: str, job: Any, kick: bool) -> None: ...


class Steps:
    """A `Dispatcher`'s steps (its base: `self` is the dispatcher)."""

    async def _step_ends(self: _Dispatcher) -> None:
        """Group commit: the end of each step of the shell. Every reader whose worker's
        message came in one poll of the sockets hands it to its job, then this carries out
        what they asked for at once, their journals in one transaction (trio runs a task
        woken during a batch of runnable tasks after that batch)."""
        while True:
            await self._step_end.wait()
            self._step_end = trio.Event()
            self._carry_out()

    def _flush(self: _Dispatcher, job_id: str, *, kick: bool = True) -> None:
        """Have what a job's run asks for carried out at the end of this step of the shell
        (`_step_ends`), or now if the dispatcher is not serving."""
        if job_id not in self._jobs:
            return
        self._dirty[job_id] = self._dirty.get(job_id, False) or kick
        if self._nursery is None:
            self._carry_out()
        else:
            self._step_end.set()

    def _carry_out(self: _Dispatcher) -> None:
        """What the stepped jobs' runs ask for (which may make them ask for more): each round
        of their journals made durable in one transaction before any of what it caused goes
        out (group commit: one write per step, however many messages came in it)."""
        while self._dirty:
            dirty, self._dirty = self._dirty, {}
            asked = [
                (job_id, job, job.run.actions(), kick)
                for job_id, kick in dirty.items()
                if (job := self._jobs.get(job_id)) is not None
            ]
            self.record([e for _, job, _, _ in asked for e in job.run.journal])
            for job_id, job, actions, kick in asked:
                job.run.journal.clear()
                if actions:
                    self._act(job_id, job, actions)
                    self._dirty[job_id] = self._dirty.get(job_id, False) or kick
                else:
                    self._quiet(job_id, job, kick)

    def _act(self: _Dispatcher, job_id: str, job: Any, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                sent = action.message
                if isinstance(sent, Unreserve):  # no answer comes to a give-up
                    self._rid_owner.pop((action.peer, sent.rid), None)
                elif isinstance(sent, ANSWERED):
                    self._rid_owner[(action.peer, sent.rid)] = job_id
                self._send(action.peer, sent)
            elif isinstance(action, Connect):
                self._connect(job_id, action.worker, action.addresses)
            elif isinstance(action, Close):
                self._close(action.worker, action.reason)
            elif isinstance(action, Settled):
                _log_settled(job.run, action.task_id)
                ended = job.run.tasks[action.task_id]
                if ended.state.value in ("failed", "timed_out"):
                    self.ended_failures.append((job_id, ended.spec.task_id, ended.since))
                if job.on_settled is not None:
                    job.on_settled(job.run, action.task_id)
                if (watcher := self._watchers.get(action.task_id)) is not None:
                    watcher[1]()
            elif isinstance(action, Streamed):
                if (watcher := self._watchers.get(action.task_id)) is not None:
                    watcher[0](action.output)
            elif isinstance(action, Discover):
                self._start_discovery(job_id)
            elif isinstance(action, Compare) and self._nursery is not None:
                self._nursery.start_soon(self._compare, job_id, action)
            elif isinstance(action, Challenge):
                self.challenge_for_jobs(action.worker)

    def _quiet(self: _Dispatcher, job_id: str, job: Any, kick: bool) -> None:
        """A job that asks for nothing more this step: gone if it is done."""
        if job.run.done:
            del self._jobs[job_id]
            job.done.set()
            for key in [k for k, owner in self._rid_owner.items() if owner == job_id]:
                del self._rid_owner[key]
            for worker, link in list(self._links.items()):
                link.jobs.discard(job_id)
                self._idle(worker, link)
        # The timer loop looks again only if this job's next deadline comes before the time it
        # sleeps until: waking it for every message would tick every job for every message.
        if kick and (job.run.done or job.run.next_deadline() < self._waking_at):
            self._kick.set()


def _log_settled(run: JobRun, task_id: str) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return
    t = run.tasks[task_id]
    worker = t.receipt.worker if t.receipt is not None else t.worker
    log.debug(
        "task %s %s%s",
        task_id,
        t.state.value,
        f": {t.error}" if t.error else "",
        extra={
            "job": run.job,
            "task": task_id,
            "worker": worker.hex() if worker is not None else None,
            "attempts": t.attempts,
        },
    )
