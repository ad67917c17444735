"""The scheduler's trio shell: drives all of a node's `JobRun`s over one secure channel per
worker, finds workers in the DHT for them, and keeps their timers.

Owns: the links (a channel to a worker, its reader and its writer, shared by every job that
uses that worker, and kept `LINGER_S` after the last of them for the next), routing each
answer to its job (by request id, by the job a quote names, by the job a task id names), the
watchers of tasks' partial results, and the one timer loop; it keeps the standing quotes
(`standing`), which its paid-only jobs adopt.
Promises: a job's `done` event is set once all its tasks are final; a worker that breaks a
rule, or does not read what it is sent, is disconnected, and every job using it hears so; an
error on one link touches no other; a link takes messages of a few KiB until its worker has
sent one (or has dealt with a job of the link before), then results of `max_result_bytes`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from p2psched.identity import Identity
from p2psched.resources.need import Need
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.compare import COMPARES_AT_ONCE
from p2psched.scheduler.discovery import Discovery
from p2psched.scheduler.predictor import Predictor
from p2psched.scheduler.run import (
    DispatchStats,
    JobRun,
    WorkerState,
)
from p2psched.scheduler.standing import StandingQuotes
from p2psched.scheduler.steps import Steps
from p2psched.scheduler.strategy import Strategy
from p2psched.scheduler.verifying import Underway, Verifying
from p2psched.scheduler.worker_views import RECENT_FAILURES, WorkerViews
from p2psched.store import Store
from p2psched.store.journal import Entry
from p2psched.wire.address import is_relayed
from p2psched.wire.channel import Outbox, SecureChannel
from p2psched.wire.codec import DecodeError
from p2psched.wire.deal import MAX_OPENING_MESSAGE, MAX_RESULT_BYTES, job_of, max_result_message
from p2psched.wire.frame_budget import FrameBudget
from p2psched.wire.messages import (
    CHALLENGE_MESSAGES,
    Beat,
    Decline,
    Lease,
    Message,
    Partial,
    QuoteReply,
    Ready,
    Refusal,
    Reject,
    Result,
    Withdrawn,
    encode,
    parse,
    result_task,
)
from p2psched.wire.noise import ChannelError
from p2psched.wire.schema import SchemaError

Settle = Callable[[JobRun, str], None]
FindWorkers = Callable[[Need], Awaitable[list[WorkerAd]]]
ExplainMisses = Callable[[Need], str]  # why the last `FindWorkers` found none for a need


class Dial(Protocol):
    """Opens a secure channel to the worker `expected_peer` at one of its addresses, directly
    or through a gate (the node passes the gate client's: the scheduler knows no gates)."""

    def __call__(
        self, address: str, identity: Identity, *, expected_peer: bytes, max_frame: int
    ) -> AbstractAsyncContextManager[SecureChannel]: ...


log = logging.getLogger(__name__)
_UNNEEDED = "no job needs it now"
FLUSH_S = 5.0  # a link no job needs any more closes once its last messages are out, or then
# ... after staying open this long for the next job (one of a stream of small ones, such as the
# OpenAI gateway's requests, would otherwise pay a TCP and Noise handshake each)
LINGER_S = 10.0


def dht_finder(discovery: Discovery) -> FindWorkers:
    async def find(need: Need) -> list[WorkerAd]:
        return await discovery.find(need, fresh=True)

    return find


@dataclass(slots=True)
class _Job:
    run: JobRun
    on_settled: Settle | None
    done: trio.Event = field(default_factory=trio.Event)
    discovering: bool = False


@dataclass(slots=True)
class _Link:
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    jobs: set[str] = field(default_factory=set)
    outbox: Outbox | None = None
    public_key: bytes | None = None
    reason: str | None = None  # why it ended, when we ended it
    relayed: bool = False  # its channel goes through a gate's circuit
    idle_since: float | None = None  # when its last job ended, while no job needs it
    lingering: bool = False  # a task waits to close it once it has been idle `LINGER_S`
    settled: trio.Event = field(default_factory=trio.Event)  # set once it is up, or gone
    ended: str | None = None  # why it went, once it has


class Dispatcher(Verifying, Steps):
    """The scheduler role of a node: runs its jobs (`add`) over one link per worker shared by
    all of them, finds workers for them in the DHT, records what they journal before it acts
    on it, and ticks them on one timer loop. Serve it with `nursery.start(dispatcher.serve)`."""

    def __init__(
        self,
        identity: Identity,
        find: FindWorkers,
        dial: Dial,
        *,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
        max_result_bytes: int = MAX_RESULT_BYTES,
        receive_budget_bytes: int = 2 * max_result_message(MAX_RESULT_BYTES),
        explain: ExplainMisses = lambda need: f"no worker found that meets {need}",
    ) -> None:
        self.identity = identity
        self.explain = explain
        # What a worker may send once it said what it is: a result, of the node's jobs' limit.
        self.max_message_bytes = max_result_message(max_result_bytes)
        # ... and what all links may be receiving at once, of messages that large.
        self.frame_budget = FrameBudget(max(receive_budget_bytes, self.max_message_bytes))
        self.store = store
        self.find = find
        self.dial = dial
        self.clock = clock
        self.rids = itertools.count(1)
        # The node's scheduling policy, shared by its jobs and switchable while they run.
        self.strategy = Strategy()
        self.predictor = Predictor()
        self.views = WorkerViews()
        # For whoever watches the node (API, dashboard): the latest ad found of each worker,
        # and the latest tasks that ended failed (job, task, when), both bounded.
        self.ads: OrderedDict[bytes, WorkerAd] = OrderedDict()
        self.ended_failures: deque[tuple[str, str, float]] = deque(maxlen=RECENT_FAILURES)
        self.stats = DispatchStats()  # summed over the node's jobs, for its metrics
        self._jobs: dict[str, _Job] = {}
        self._links: dict[bytes, _Link] = {}
        self._rid_owner: dict[tuple[bytes, int], str] = {}  # (worker, rid) -> job
        self._kick = trio.Event()
        # Jobs whose runs were stepped since the last end of a step: what they asked for is
        # carried out then, one transaction for all (True: it may wake the timer loop).
        self._dirty: dict[str, bool] = {}
        self._step_end = trio.Event()
        self._waking_at = -math.inf  # when the timer loop wakes by itself
        self._nursery: trio.Nursery | None = None
        self._closing: list[_Link] = []  # links going once what was queued for them is out
        # task id -> where its partial results go, and what to call once it is final
        self._watchers: dict[str, tuple[Callable[[Any], None], Callable[[], None]]] = {}
        self.standing = StandingQuotes()
        self._challenges: dict[bytes, Underway] = {}
        self._compares = trio.CapacityLimiter(COMPARES_AT_ONCE)  # job's compare commands

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._step_ends)
            task_status.started()
            while True:
                deadline = min(
                    (j.run.next_deadline() for j in self._jobs.values()), default=math.inf
                )
                self._waking_at = min(deadline, self.clock() + 3600.0)
                with trio.move_on_at(trio.current_time() + self._waking_at - self.clock()):
                    await self._kick.wait()
                self._kick = trio.Event()
                now = self.clock()
                for job_id, job in list(self._jobs.items()):
                    self._guarded(job_id, job.run.tick, now)
                    self._dirty.setdefault(job_id, False)
                self._carry_out()  # (all the jobs' ticks in one transaction)

    def add(
        self,
        run: JobRun,
        on_settled: Settle | None = None,
        *,
        found: list[WorkerAd] | None = None,
    ) -> trio.Event:
        """Start running `run`; the event is set when all its tasks are final. `found`: the
        workers its submitter just found for it (a discovery cache's): it starts on those,
        and looks in the DHT only once they cannot take its tasks (a round trip or more of
        the DHT saved, for a job of one small task)."""
        job = _Job(run, on_settled)
        self._jobs[run.job] = job
        if found:
            now = self.clock()
            self._guarded(run.job, run.add_workers, found, now)
            others = [j.run for j in self._jobs.values()]
            self._guarded(run.job, functools.partial(self.standing.adopt, run, others=others), now)
        else:
            self._start_discovery(run.job)
        self._flush(run.job)
        self._carry_out()
        return job.done

    def record(self, entries: list[Entry]) -> None:
        """Make `entries` durable (then empty the list), before what they caused goes out."""
        if self.store is not None:  # (with the workers' records changed since: a row each)
            self.store.record([*entries, *self.views.changed()])
        entries.clear()

    def rival(self, job_id: str, worker: WorkerState) -> float:
        """The earliest latest-start, among the node's jobs but `job_id`, of a task queued
        that `worker` could take: one job does not fill a worker another job's earlier task
        needs (a large job would otherwise starve a small one submitted after it)."""
        if len(self._jobs) < 2:
            return math.inf
        return min(
            (j.run.due_on(worker) for k, j in self._jobs.items() if k != job_id),
            default=math.inf,
        )

    @contextmanager
    def watch(
        self, task_id: str, on_partial: Callable[[Any], None], on_final: Callable[[], None]
    ) -> Iterator[None]:
        """Hand `on_partial` each partial result of `task_id` its run passes on (a streamed
        answer's chunks), then call `on_final` once the task is final, until the block ends.
        One watcher per task: a second replaces the first. (Both are called on the trio
        thread, and must not wait.)"""
        watcher = (on_partial, on_final)
        self._watchers[task_id] = watcher
        try:
            yield
        finally:
            if self._watchers.get(task_id) is watcher:
                del self._watchers[task_id]

    @property
    def connected_workers(self) -> int:
        """Workers this node has a channel up to now."""
        return sum(1 for link in self._links.values() if link.public_key is not None)

    def known_workers(self) -> list[bytes]:
        """The workers this node knows of: those its running jobs found, and those it has a
        record of from earlier jobs."""
        running = (w for j in self._jobs.values() for w in j.run.workers)
        return list(dict.fromkeys([*running, *self.views.workers()]))

    def cancel(self, job_id: str, task_ids: list[str] | None) -> list[str]:
        job = self._jobs.get(job_id)
        if job is None:
            return []
        aborted = job.run.cancel(task_ids, self.clock())
        self._flush(job_id)
        self._carry_out()  # (on disk before the caller is told)
        return aborted

    # -- actions --------------------------------------------------------------------------

    def _send(self, worker: bytes, message: Message) -> None:
        link = self._links.get(worker)
        if link is None or link.outbox is None:
            return
        if not link.outbox.put_frame(encode(message)):
            self._close(worker, "it does not read what it is sent")

    def _close(self, worker: bytes, reason: str, *, when_written: bool = False) -> None:
        """Drop the link to `worker`; `when_written`: once what was queued for it has gone
        out (a job that ends says why to its workers: a cancel must reach them, or they run
        the cancelled tasks to the end and earn for them), or after `FLUSH_S` at most."""
        # Out of the table at once: a job that wants this worker from now on gets a new link,
        # not one that is going away.
        link = self._links.pop(worker, None)
        if link is None:
            return
        link.reason = link.reason or reason
        if when_written and link.outbox is not None and self._nursery is not None:
            self._closing.append(link)
            self._nursery.start_soon(self._close_when_written, link)
        else:
            link.scope.cancel()

    def _idle(self, worker: bytes, link: _Link) -> None:
        """`link` may be idle now: if no job and no challenge needs it, it closes after
        `LINGER_S` (unless one comes)."""
        if link.jobs or worker in self._challenges or link.idle_since is not None:
            return
        link.idle_since = trio.current_time()
        if not link.lingering and self._nursery is not None:
            link.lingering = True
            self._nursery.start_soon(self._close_when_idle, worker, link)

    async def _close_when_idle(self, worker: bytes, link: _Link) -> None:
        """Close `link` once no job has needed it for `LINGER_S` (a job that joins it in the
        meantime keeps it)."""
        try:
            while link.idle_since is not None and self._links.get(worker) is link:
                if link.idle_since + LINGER_S <= trio.current_time():
                    self._close(worker, _UNNEEDED, when_written=True)
                    return
                await trio.sleep_until(link.idle_since + LINGER_S)
        finally:
            link.lingering = False

    async def _close_when_written(self, link: _Link) -> None:
        assert link.outbox is not None
        with trio.move_on_after(FLUSH_S):
            await link.outbox.written()
        link.scope.cancel()
        self._closing.remove(link)

    async def links_flushed(self) -> None:
        """Return once the links closing, or open with no job, have written what was queued
        for them (FLUSH_S at most each): a process that leaves after a cancel waits here, so
        the cancel goes."""
        idle = [link for link in self._links.values() if not link.jobs and link.outbox]
        for link in [*self._closing, *idle]:
            assert link.outbox is not None
            with trio.move_on_after(FLUSH_S):
                await link.outbox.written()

    def _connect(self, job_id: str, worker: bytes, addresses: tuple[str, ...]) -> None:
        link = self._open_link(worker, addresses)
        link.jobs.add(job_id)
        if link.public_key is not None:  # already up: this job joins it
            run = self._jobs[job_id].run
            step = functools.partial(run.connected, relayed=link.relayed)
            self._guarded(job_id, step, worker, link.public_key, self.clock())

    def _open_link(self, worker: bytes, addresses: tuple[str, ...]) -> _Link:
        """The link to `worker`, dialled now if there is none; it is needed (not idle)."""
        link = self._links.get(worker)
        if link is None:
            link = self._links[worker] = _Link()
            assert self._nursery is not None
            self._nursery.start_soon(self._link, worker, addresses, link)
        link.idle_since = None
        return link

    def _start_discovery(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.discovering or self._nursery is None:
            return
        job.discovering = True
        self._nursery.start_soon(self._discover, job_id, job)

    async def _discover(self, job_id: str, job: _Job) -> None:
        try:
            needs = {str(t.spec.need): t.spec.need for t in job.run.tasks.values()}
            for need in needs.values():
                ads = await self.find(need)
                self.saw(ads)
                if job_id in self._jobs:
                    if not ads:
                        job.run.no_worker_found(need, self.explain(need))
                    self._guarded(job_id, job.run.add_workers, ads, self.clock())
                    self._flush(job_id)
        finally:
            job.discovering = False

    # -- links ----------------------------------------------------------------------------

    async def _link(self, worker: bytes, addresses: tuple[str, ...], link: _Link) -> None:
        reason = "it advertises no address"
        with link.scope:
            for address in addresses:
                # A worker new to the link's jobs is a stranger until it sends a message; one
                # that dealt with them before may send a result first (one it owes them).
                jobs = (self._jobs[j].run for j in link.jobs & self._jobs.keys())
                dealt = any(run.dealt_with(worker) for run in jobs)
                opening = self.max_message_bytes if dealt else MAX_OPENING_MESSAGE
                try:
                    async with self.dial(
                        address, self.identity, expected_peer=worker, max_frame=opening
                    ) as channel:
                        if dealt:  # (before its reader reads on: it has not run yet)
                            channel.set_max_frame(opening, self.frame_budget)
                        # (set once a channel is up: a dial that failed leaves it False)
                        link.relayed = is_relayed(address)
                        log.info(
                            "connected to worker %s%s",
                            worker.hex()[:16],
                            " through a gate's relay" if link.relayed else "",
                            extra={"worker": worker.hex(), "address": address},
                        )
                        reason = await self._session(worker, channel, link)
                        break
                except (ChannelError, ValueError) as e:
                    reason = str(e)
        if link.reason is not None:
            reason = link.reason
        # A link closed because no job needs it is routine; any other end is news.
        log.log(
            logging.DEBUG if link.reason == _UNNEEDED else logging.INFO,
            "worker %s %s: %s",
            worker.hex()[:16],
            "lost" if link.public_key is not None else "not reached",
            reason,
            extra={"worker": worker.hex(), "jobs": sorted(link.jobs)},
        )
        if self._links.get(worker) is link:
            del self._links[worker]
        link.ended = reason
        link.settled.set()
        self._challenge_heard(worker, None, 0.0)
        self.standing.drop(worker)
        for key in [k for k in self._rid_owner if k[0] == worker]:
            del self._rid_owner[key]  # answers that can no longer come
        now = self.clock()
        for job_id in list(link.jobs):
            job = self._jobs.get(job_id)
            if job is not None:
                step = functools.partial(job.run.disconnected, relayed=link.relayed)
                self._guarded(job_id, step, worker, reason, now)
                self._flush(job_id)

    async def _session(self, worker: bytes, channel: SecureChannel, link: _Link) -> str:
        link.outbox, link.public_key = Outbox(channel), channel.peer.public_key
        link.settled.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.outbox.run)
            now = self.clock()
            for job_id in list(link.jobs):
                if job_id in self._jobs:
                    run = self._jobs[job_id].run
                    step = functools.partial(run.connected, relayed=link.relayed)
                    self._guarded(job_id, step, worker, channel.peer.public_key, now)
                    self._flush(job_id)
            try:
                while True:
                    frame = await channel.receive_frame()
                    try:
                        message = parse(frame)
                    except SchemaError as e:
                        task = result_task(frame)
                        if task is None:
                            return f"sent a malformed message ({e})"
                        self._refused_result(worker, task, str(e))
                        continue
                    except DecodeError as e:
                        return f"peer sent a message that is not valid: {e}"
                    channel.set_max_frame(self.max_message_bytes, self.frame_budget)  # said
                    if isinstance(message, Refusal):
                        return f"it refused the channel: {message.reason}"
                    self._route(worker, link, message)
            except ChannelError as e:
                return str(e)
            finally:
                nursery.cancel_scope.cancel()

    def _route(self, worker: bytes, link: _Link, m: Message) -> None:
        """Hand a worker's message to the job it is for: by the job its quote or task
        names, by the request it answers, or (a heartbeat) to each job, about its tasks."""
        now = self.clock()
        if isinstance(m, CHALLENGE_MESSAGES) or self._challenge_takes(worker, m):
            self._challenge_heard(worker, m, now)  # (never a job's: it would drop the worker)
            return
        match m:
            case Beat():
                for job_id in list(link.jobs):
                    mine = [(t, p) for t, p in zip(m.running, m.progress) if job_of(t) == job_id]
                    beat = Beat([t for t, _ in mine], [p for _, p in mine])
                    self._deliver(job_id, worker, beat, now)
                return
            case QuoteReply():
                self._rid_owner.pop((worker, m.rid), None)
                self._deliver(m.quote.job, worker, m, now)
                if (asker := self._jobs.get(m.quote.job)) is not None:
                    self.standing.keep(asker.run, worker, m.quote)
                return
            case Reject():
                self.standing.drop(worker)
                job_id = self._rid_owner.pop((worker, m.rid), "")
            case Decline() | Lease() | Withdrawn():
                job_id = self._rid_owner.pop((worker, m.rid), "")
            case Ready():  # a reservation stands until given up: its owner stays
                job_id = self._rid_owner.get((worker, m.rid), "")
            case Result() | Partial():
                job_id = job_of(m.task)
            case _:  # a message only schedulers send: the job that hears it drops the worker
                job_id = next(iter(link.jobs), "")
        self._deliver(job_id, worker, m, now)

    def _refused_result(self, worker: bytes, task_id: str, reason: str) -> None:
        """A result for `task_id` that did not parse: that task fails there, the link stays."""
        job_id = job_of(task_id)
        job = self._jobs.get(job_id)
        if job is not None:
            step = functools.partial(job.run.refuse_result, task_id=task_id, reason=reason)
            self._guarded(job_id, step, worker, self.clock())
            self._flush(job_id)

    def _deliver(self, job_id: str, worker: bytes, m: Message, now: float) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            self._guarded(job_id, job.run.receive, worker, m, now)
            self._flush(job_id)

    def _guarded(self, job_id: str, step: Callable[..., None], *args: Any) -> None:
        """Run one step of a job's core (`now` last); a bug there fails that job, not the
        node."""
        try:
            step(*args)
        except Exception as e:
            log.exception("job %s failed inside the scheduler", job_id, extra={"job": job_id})
            self._jobs[job_id].run.abandon(
                f"internal error in the scheduler: {e!r}"[:300], args[-1]
            )
