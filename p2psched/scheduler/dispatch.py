"""One job's run on its scheduler, sans-I/O: queue, quotes, commitments, dispatch, results,
retries. It takes worker ads, channel events, messages and `now`, and gives back actions.

Owns: each task's state (through `lifecycle`), which worker holds it, the job's budget, and the
rules for putting a task back: a worker lost or silent, a commitment rejected, a driver that
failed, a receipt that did not verify, a timeout. Such a task goes back at the head of the queue
with that worker excluded (but for a rejection), until the job's retries are spent. Tasks travel
with their commitment; the worker's lease confirms them.
It also counts, in plain numbers the node's metrics read (`DispatchStats`, shared by a node's
jobs): negotiation steps, task outcomes, and how long tasks waited queued.
Promises: a task is counted done once, and only with a receipt signed by the worker it was
committed to, naming this scheduler, this job and this task, and hashing the output received;
the job never commits more money than its budget; every task reaches a final state.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from p2psched.histogram import QUEUE_WAIT_BUCKETS, Histogram
from p2psched.identity import Identity
from p2psched.resources.profile import Profile
from p2psched.scheduler.discovery import WorkerAd
from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.journal import Charged, Committed, Moved
from p2psched.scheduler.journal import Entry as JournalEntry
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.predictor import Predictor
from p2psched.scheduler.queue import Entry, TaskQueue, latest_start
from p2psched.scheduler.store import StoredTask
from p2psched.scheduler.strategy import LATE_BINDING, PROBE_RATIO, Candidate, Chooser, Strategy
from p2psched.scheduler.worker_views import WorkerViews
from p2psched.wire.address import is_relayed
from p2psched.wire.codec import decode, encode
from p2psched.wire.deal import (
    MAX_BATCH,
    MAX_RESERVED,
    MAX_RESULT_BYTES,
    MAX_RESULT_DEPTH,
    Commitment,
    Quote,
    Receipt,
    depth_over,
    packed_hash,
)

S = TaskState
IN_FLIGHT = (S.SCHEDULED, S.SENT, S.RUNNING)
DECLINE_BACKOFF_S = 2.0
MAX_ASIDE = 256  # tasks no worker can take, passed over per commit round, at most
MAX_SCAN = 4096  # queue entries looked at per commit round, at most
MAX_REJECTS = 3
MAX_BUSY_REJECTS = 30  # a minute of backing off: then its quotes are not worth asking for
MONEY_EPSILON = 1e-9  # sums of prices drift in floating point; amounts closer are equal
MAX_PROBES = 4096  # late binding: places reserved by one job, at most
COMMIT_BYTES = 8 << 20  # task inputs sent with one commitment, at most (frames are 16 MiB)
REBALANCE_AFTER_S = 2.0  # a task sent this long ago and not seen running waits in a queue
REBALANCE_GAIN = 0.5  # ... and moves if another worker would have it done in half the time
MAX_MOVES = 64  # tasks moved per sweep, at most
DEADLINE_MARGIN = 1.5  # a worker makes a deadline if it would with its expected time x this
QUEUE_ALLOWANCE = 5  # a sent task may take this many timeouts before it is seen running


@dataclass(frozen=True, slots=True)
class Connect:
    worker: bytes
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Send:
    worker: bytes
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    """Drop the channel to this worker: it broke a rule (the reason says which)."""

    worker: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Settled:
    """A task reached a final state (write its result out, update the display)."""

    task_id: str


@dataclass(frozen=True, slots=True)
class Discover:
    """Look for (more) workers: some tasks have no candidate left."""


Action = Connect | Send | Close | Settled | Discover


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    quote_timeout_s: float = 5.0
    quote_wait_s: float = 0.25  # how long the first answers wait for the other candidates'
    max_quote_s: float = 30.0  # a quote is used at most this long, whatever it says
    silence_s: float = 5.0  # a worker holding tasks that says nothing this long is lost
    timeout_grace_s: float = 10.0  # beyond a task's own timeout, which the worker enforces
    no_worker_s: float = 30.0  # a task with no candidate this long fails
    rediscover_s: float = 5.0
    # A worker reached through a gate whose link broke: most likely the gate went, not the
    # worker, which moves to another gate and says so in a new ad. Its tasks stay its for
    # this long (they run on, and it keeps their results for us) before they go elsewhere.
    regain_s: float = 60.0
    max_quotes: int = 32  # candidates asked at once
    max_result_bytes: int = MAX_RESULT_BYTES


@dataclass(slots=True)
class DispatchStats:
    """What a node's jobs did, summed over them (they share one): plain numbers for its metrics."""

    # Messages of the deal by kind, both ways (asked, quote, decline, commit, lease, reject,
    # reserve, ready, withdraw, withdrawn), and quote requests left unanswered (no_answer).
    negotiation: Counter[str] = field(default_factory=Counter)
    # Final states reached (completed, failed, timed_out, aborted), and retried: a task put
    # back in the queue after a worker had it.
    outcomes: Counter[str] = field(default_factory=Counter)
    # Seconds from entering the queue to being handed to a worker.
    queue_wait: Histogram = field(default_factory=lambda: Histogram(QUEUE_WAIT_BUCKETS))


@dataclass(slots=True)
class TaskRun:
    spec: TaskSpec
    state: TaskState = S.UNSCHEDULED
    attempts: int = 0  # dispatches that ended in failure
    excluded: set[bytes] = field(default_factory=set)
    worker: bytes | None = None
    price: float = 0.0
    since: float = 0.0  # when it entered its state
    retry: bool = False
    error: str | None = None
    output: Any = None
    receipt: Receipt | None = None
    progress: float = 0.0
    stranded_since: float = math.nan  # when it last had no candidate
    deadline: float = math.inf  # of its current state (lease or timeout), when it has one
    input_bytes: int = 0  # its input, encoded
    due: float = math.inf  # its latest start, while queued
    sent_at: float = 0.0  # when it last went to a worker
    moving: bool = False  # asked back from its worker's queue, to go elsewhere

    @property
    def placed_on(self) -> bytes | None:
        """The worker that ran it (its receipt's), or that holds it now; None if neither."""
        return self.receipt.worker if self.receipt is not None else self.worker


@dataclass(slots=True)
class _Worker:
    ad: WorkerAd
    public_key: bytes | None = None
    link: str = "none"  # none | connecting | up | down
    rid: int | None = None  # outstanding quote request
    asked_at: float = 0.0
    quote: Quote | None = None
    quote_until: float = 0.0  # when we stop using `quote`
    room: int = 0  # tasks it would still take under its quote
    holding: set[str] = field(default_factory=set)
    pending: dict[int, list[str]] = field(default_factory=dict)  # commit rid -> tasks
    heard: float = 0.0
    declined: str | None = None
    ask_after: float = 0.0  # after a decline, when to ask again
    rejects: int = 0  # commitments it rejected
    busy_rejects: int = 0  # ... for want of room, which is allowed a while longer
    batch_bytes: int = 0  # inputs in the commitment being put together for it
    banned: bool = False  # broke the protocol: never asked again by this job
    reserved: dict[int, int] = field(default_factory=dict)  # late binding: rid -> places
    run_estimate: float = 1.0  # seconds a task of its quote's kind is expected to take there
    restored: set[str] = field(default_factory=set)  # tasks it held before we restarted
    regain_by: float = math.inf  # a relayed link broke: its tasks wait for it till then
    redial_at: float = math.inf  # ... and while its link is down, we dial it again then
    relayed: bool = False  # its link (when up) goes through a gate's circuit
    withdrawing: dict[int, list[str]] = field(default_factory=dict)  # rid -> tasks asked back


WorkerState = _Worker  # what a job knows of a worker, for the node's shell to pass around
_NEGOTIATION = frozenset({"quote", "decline", "ready", "lease", "reject", "withdrawn"})


class JobRun:
    def __init__(
        self,
        identity: Identity,
        job: str,
        tasks: Iterable[TaskSpec],
        *,
        mtr: float,
        budget: float = math.inf,
        now: float,
        config: DispatchConfig | None = None,
        rids: Iterator[int] | None = None,
        deadline: float | None = None,
        strategy: Strategy | None = None,
        predictor: Predictor | None = None,
        views: WorkerViews | None = None,
        durable: bool = False,
        rival: Callable[[str, _Worker], float] | None = None,
        stats: DispatchStats | None = None,
    ) -> None:
        self.identity = identity
        self.stats = DispatchStats() if stats is None else stats
        # Shared by the node's jobs: switching strategy takes effect for all at once, and what
        # one job learns of a worker's speed and reliability serves the others.
        # (`is None`, not `or`: an empty predictor or record has a length of 0, and is falsy)
        self.strategy = Strategy() if strategy is None else strategy
        self.predictor = Predictor() if predictor is None else predictor
        self.views = WorkerViews() if views is None else views
        self.deadline = deadline  # when every task must be done, if the job says
        self.job = job
        self.mtr = mtr
        self.budget = budget
        self.config = config or DispatchConfig()
        self.tasks: dict[str, TaskRun] = {
            t.task_id: TaskRun(t, input_bytes=len(encode(t.input))) for t in tasks
        }
        self.workers: dict[bytes, _Worker] = {}
        self.spent = 0.0
        self.held = 0.0
        self._queue = TaskQueue()
        self._queued = 0
        self._final = 0  # tasks in a final state
        self._shapes: Counter[tuple[str, str | None, str, float]] = Counter()  # queued, by kind
        self._shape_spec: dict[tuple[str, str | None, str, float], TaskSpec] = {}
        # (deadline, task id): an entry is stale once the task's own deadline moved on.
        self._timers: list[tuple[float, str]] = []
        self._next_sweep = now
        self._ticked = -math.inf  # when `tick` last ran
        # Request ids: unique across the node's jobs when they share `rids`, since one channel
        # to a worker carries them all and answers are routed back by id.
        self._rids = rids if rids is not None else itertools.count(1)
        self._out: list[Action] = []
        # What the shell must make durable before it carries out the actions of the same
        # step: a commitment is on record before it is sent, a result before it is acked.
        self.journal: list[JournalEntry] = []
        self.durable = durable  # keep a journal at all (a node with a store does)
        # When the node's other jobs have a task due on a worker (their earliest latest
        # start, inf if none): a task of ours due later leaves that worker's room to them.
        self.rival = rival
        self._reserved = 0  # late binding: places held in workers' queues, in all
        self._by_price: list[_Worker] | None = None
        # Workers that would take tasks now, and per kind of task a chooser over those that
        # serve it, kept current as quotes, room and links change (not rebuilt per round).
        self._cands: dict[bytes, Candidate] = {}
        self._choosers: dict[tuple[str, str | None, str, float], Chooser] = {}
        self._choosing = self.strategy.name
        self._asked: dict[bytes, TaskSpec] = {}  # worker -> the kind of task its quote is for
        # Kinds of task waiting in workers' queues, for which quotes are sought even with
        # nothing queued here: a faster worker that turns up may take them (rebalancing).
        self._seek: dict[tuple[str, str | None, str, float], TaskSpec] = {}
        self._seeking = 0  # tasks waiting in workers' queues (as of the last sweep)
        # MTR 0, by kind of task: the least price among the workers that could take it (and
        # who that is), cleared when a worker comes, goes, declines or is skipped.
        self._floors: dict[tuple[str, str | None, str, float], tuple[float, bytes]] = {}
        self._now = now  # of the commit round under way
        self._granted: dict[bytes, int] = {}  # rebalancing: tasks sent each worker's way
        self._next_rebalance = now
        self._last_discover = now
        self.started = now
        for run in self.tasks.values():
            self._enqueue(run, now)

    # -- what the shell reads -------------------------------------------------------------

    def actions(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    @property
    def done(self) -> bool:
        return self._final == len(self.tasks)

    def public_key_of(self, worker: bytes) -> bytes | None:
        w = self.workers.get(worker)
        return w.public_key if w is not None else None

    def counts(self) -> Counter[str]:
        return Counter(t.state.value for t in self.tasks.values())

    def next_deadline(self) -> float:
        c = self.config
        asked = [w.asked_at for w in self.workers.values() if w.rid]
        times = [t + c.quote_timeout_s for t in asked]
        # Two deadlines only prompt a look at the quotes: once a tick has passed them, the
        # look was taken, and repeating them would spin.
        soft = [min(asked) + c.quote_wait_s] if asked else []
        times += [
            w.heard + c.silence_s for w in self.workers.values() if w.holding and w.link == "up"
        ]
        times += [w.quote_until for w in self.workers.values() if w.quote]
        regaining = [w for w in self.workers.values() if w.regain_by < math.inf]
        if regaining:
            times.append(self._last_discover + c.rediscover_s)
            # Not while a dial is under way: that regain ends when the dial does.
            times += [w.regain_by for w in regaining if w.link != "connecting"]
            times += [w.redial_at for w in regaining if w.link == "down"]
        while self._timers and self.tasks[self._timers[0][1]].deadline != self._timers[0][0]:
            heapq.heappop(self._timers)
        if self._timers:
            times.append(self._timers[0][0])
        if self.deadline is not None and not self.done:
            times.append(self.deadline)
        if self._queued:
            times.append(self._next_sweep)
            soft += [w.ask_after for w in self.workers.values()]
        times += [t for t in soft if t > self._ticked]
        return min(times, default=math.inf)

    # -- events ---------------------------------------------------------------------------

    def add_workers(self, ads: Iterable[WorkerAd], now: float) -> None:
        for ad in ads:
            if ad.node_id == self.identity.node_id:
                continue
            w = self.workers.get(ad.node_id)
            if w is None:
                self.workers[ad.node_id] = _Worker(ad)
                self._by_price = None
                self._floors.clear()
            elif w.ad.seq < ad.seq:
                w.ad = ad
                self._by_price = None
                self._floors.clear()
                if w.link == "down" and not w.banned:  # a fresh ad: it may be back
                    w.link = "none"
                if w.regain_by < math.inf and w.link == "none":  # back, through another gate
                    self._dial(w)
                elif w.regain_by < math.inf and w.link == "connecting":
                    w.redial_at = now  # (to its old address): if that fails, the new one at once
        self._pump(now)

    def restore(
        self,
        tasks: Mapping[str, StoredTask],
        addresses: Callable[[bytes], tuple[str, ...]],
        now: float,
    ) -> None:
        """Pick up where this node left off before it stopped: `tasks` as the store has them.
        Final tasks stay final (with their results and receipts): nothing done runs again.
        Tasks a worker held are still its: we reconnect, and it delivers what it finished
        meanwhile, or its first heartbeat shows it dropped them (then they are queued again,
        with no attempt counted). The rest are queued. Loading a state is not a transition:
        nothing here is journaled (it is on record already)."""
        for tid, st in tasks.items():
            t = self.tasks.get(tid)
            if t is None:
                continue
            state = TaskState(st.state)
            t.attempts, t.error = st.attempts, st.error
            if state in (S.UNSCHEDULED, S.QUEUED):
                if st.attempts and not t.retry:  # a retry keeps its place on top
                    t.retry = True
                    self._queue.push(tid, t.due, t.spec.index, retry=True)
                continue
            if state.final:
                self._load(t, state, st.since)
                t.worker, t.price = st.worker, st.price
                t.receipt = st.receipt
                t.output = decode(st.output) if st.output is not None else None
                if st.receipt is not None and st.receipt.ok:
                    self.spent += st.receipt.price
                    t.progress = 1.0
                continue
            if st.worker is None:
                continue  # never sent: it stays queued
            w = self.workers.get(st.worker)
            if w is None:
                # Known only from the store until discovery brings its ad (seq 0 loses).
                profile = Profile(
                    cpu_model="", cpu_cores=0, ram_gb=0.0, addresses=addresses(st.worker)
                )
                w = self.workers[st.worker] = _Worker(WorkerAd(st.worker, profile, 0, now + 3600))
                self._by_price = None
                self._floors.clear()
            self._load(t, S.SENT, now)
            self._sent(t, now)
            t.worker, t.price = st.worker, st.price
            self.held += st.price
            w.holding.add(tid)
            w.restored.add(tid)
        for w in self.workers.values():
            if w.restored and w.link == "none":
                if any(is_relayed(a) for a in w.ad.profile.addresses):
                    # Reached through a gate: while we were down it may have moved to another,
                    # so a failed dial waits for its fresh ad, as a broken relayed link does.
                    w.regain_by = now + self.config.regain_s
                self._dial(w)

    def _load(self, t: TaskRun, state: TaskState, since: float) -> None:
        """Put a queued task in `state` as restored (its queue entry goes stale)."""
        assert t.state == S.QUEUED
        self._queued -= 1
        self._shapes[_shape(t.spec)] -= 1
        t.state, t.since = state, since
        self._final += state.final

    def add_tasks(self, tasks: Iterable[TaskSpec], now: float) -> None:
        """More tasks for this job (a stream of work, submitted as it comes). Their ids must
        be new to it: ValueError names the first that is not, and nothing is added."""
        new = list(tasks)
        ids = [t.task_id for t in new]
        dup = next((i for i in ids if i in self.tasks), None)
        if dup is None and len(set(ids)) < len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
        if dup is not None:
            raise ValueError(f"task {dup!r} is already in job {self.job!r}")
        for spec in new:
            run = self.tasks[spec.task_id] = TaskRun(spec, input_bytes=len(encode(spec.input)))
            self._enqueue(run, now)
        self._pump(now)

    def connected(
        self, worker: bytes, public_key: bytes, now: float, *, relayed: bool = False
    ) -> None:
        """The channel to `worker` is up (`relayed`: through a gate's circuit)."""
        w = self.workers[worker]
        w.public_key, w.link, w.heard, w.relayed = public_key, "up", now, relayed
        w.regain_by = w.redial_at = math.inf  # its first heartbeat tells what it still has
        self._pump(now)

    def disconnected(
        self, worker: bytes, reason: str, now: float, *, relayed: bool = False
    ) -> None:
        """The channel to `worker` could not be opened, or broke (`relayed`: a channel through
        a gate's circuit, which was up)."""
        w = self.workers.get(worker)
        if w is None:
            return
        self._link_lost(w, reason, f"worker lost: {reason}", now, relayed=relayed)
        self._pump(now)

    def _link_lost(self, w: _Worker, reason: str, lost: str, now: float, *, relayed: bool) -> None:
        """The link to `w` is down (it broke, could not be opened, or went silent and was
        closed). A relayed one that broke, or one being regained, keeps its tasks for a while
        (see `_regain`); otherwise its tasks go back to the queue, `lost` saying why."""
        w.link, w.rid, w.quote, w.room = "down", None, None, 0
        w.declined = reason
        for asked in w.withdrawing.values():  # no answer will come: they may move again
            for tid in asked:
                self.tasks[tid].moving = False
        w.withdrawing.clear()
        self._floors.clear()
        self._changed(w, now)
        self._forget_reservations(w)
        if w.holding and not w.banned and (relayed or w.regain_by < math.inf):
            self._regain(w, now)
        else:
            self._lose(w, lost, now)

    def _regain(self, w: _Worker, now: float) -> None:
        """A relayed link to `w` broke: most likely its gate went, not the worker, which runs
        on and keeps our results. What it was sent stays its until `regain_by`; meanwhile we
        dial it again (its fresh ad's address, or the same one: the gate may have closed only
        the circuit, or come back), and its first heartbeat then reconciles."""
        c = self.config
        if w.regain_by == math.inf:
            w.regain_by = now + c.regain_s
            # Answers to commitments in flight will not come; what it never got goes back
            # now (it did not run there: no attempt is counted).
            w.pending.clear()
            for tid in list(w.holding):
                t = self.tasks[tid]
                if t.state not in (S.SENT, S.RUNNING):
                    self._back(t, "its link broke before the task was sent", now, count=False)
            w.restored |= w.holding
            if not w.holding:
                w.regain_by = math.inf
                return
        w.redial_at = min(w.redial_at, now + c.rediscover_s)
        self._rediscover(now)

    def receive(self, worker: bytes, message: dict[str, Any], now: float) -> None:
        """A checked message (see `wire.deal.parse`) from a connected worker."""
        w = self.workers.get(worker)
        if w is None or w.link != "up":
            return
        w.heard = now
        kind = message["t"]
        if kind in _NEGOTIATION:
            self.stats.negotiation[kind] += 1
        if kind == "quote":
            self._on_quote(w, message, now)
        elif kind == "decline":  # a quote request, or (late binding) places asked for
            rid = message["rid"]
            if rid in w.reserved or rid == w.rid:
                if rid in w.reserved:
                    self._reserved -= w.reserved.pop(rid)
                else:
                    w.rid = None
                w.ask_after = now + DECLINE_BACKOFF_S
                # Busy is a "not now": the worker stays a candidate and is asked again.
                w.declined = None if message["busy"] else message["reason"]
                self._floors.clear()
        elif kind == "ready":
            self._on_ready(w, message["rid"], now)
        elif kind == "lease":
            self._on_lease(w, message, now)
        elif kind == "withdrawn":
            asked = w.withdrawing.pop(message["rid"], [])
            given = set(message["tasks"])
            for tid in asked:
                moved = self.tasks[tid]
                moved.moving = False
                if tid in given and moved.worker == worker and moved.state == S.SENT:
                    reason = "moved to a worker that would finish it sooner"
                    self._back(moved, reason, now, count=False)
        elif kind == "reject":
            self._on_reject(w, message, now)
        elif kind == "beat":
            if w.restored:
                # Its first heartbeat since we restarted: what it does not run, and did not
                # deliver just before, it dropped when we went away.
                gone = w.restored - set(message["running"])
                w.restored = set()
                for tid in gone:
                    lost = self.tasks[tid]
                    # (RUNNING too: after a regain it may have been seen running before; a
                    # result it sent on reconnecting, before this beat, completed it already)
                    if lost.worker == worker and lost.state in (S.SENT, S.RUNNING):
                        # One it had only queued did not run there. One seen running, gone
                        # now, was lost mid-run (it restarted, maybe because of that task):
                        # that counts, as a direct worker's crash does, so a task that
                        # crashes its worker cannot loop there forever.
                        reason = "dropped by its worker while our link to it was down"
                        self._back(lost, reason, now, count=lost.state == S.RUNNING)
            for tid in message["running"]:
                t = self.tasks.get(tid)
                if t is not None and t.worker == worker and t.state == S.SENT:
                    self._move(t, S.RUNNING, now)
            for tid, p in zip(message["running"], message["progress"]):
                if tid in self.tasks and self.tasks[tid].worker == worker:
                    self.tasks[tid].progress = p
        elif kind == "result":
            self._on_result(w, message, now)
        else:
            self._ban(w, f"sent a {kind!r} message, which workers do not send", now)
        self._pump(now)

    def cancel(self, task_ids: Iterable[str] | None, now: float) -> list[str]:
        """Abort these tasks (all when None) wherever they are; returns those aborted."""
        chosen = self.tasks.values() if task_ids is None else [self.tasks[i] for i in task_ids]
        ended = self._end(chosen, "cancelled", S.ABORTED, S.ABORTED, now)
        self._queue.prune(lambda tid: self.tasks[tid].state == S.QUEUED)
        return ended

    def abandon(self, reason: str, now: float) -> None:
        """End every task that is not final as failed (the job cannot go on)."""
        self._end(self.tasks.values(), reason, S.FAILED, S.FAILED, now)

    def _end(
        self,
        tasks: Iterable[TaskRun],
        reason: str,
        on_worker: TaskState,
        elsewhere: TaskState,
        now: float,
    ) -> list[str]:
        """End these tasks, those not final yet, with `reason`: in `on_worker` if a worker
        has them (it is told to stop), else in `elsewhere`. Returns the ids ended."""
        ending = [t for t in tasks if not t.state.final]
        self._stop_on_workers([t for t in ending if t.state in IN_FLIGHT])
        for t in ending:
            self._release(t)
            t.error = reason
            self._move(t, on_worker if t.state in (S.SENT, S.RUNNING) else elsewhere, now)
            self._out.append(Settled(t.spec.task_id))
        return [t.spec.task_id for t in ending]

    def _stop_on_workers(self, tasks: Iterable[TaskRun]) -> None:
        """Tell the workers holding these tasks to stop them (those we still talk to)."""
        by_worker: dict[bytes, list[str]] = {}
        for t in tasks:
            if t.worker is not None and self.workers[t.worker].link == "up":
                by_worker.setdefault(t.worker, []).append(t.spec.task_id)
        for worker, ids in by_worker.items():
            self._out.append(Send(worker, {"t": "cancel", "tasks": ids}))

    def tick(self, now: float) -> None:
        c = self.config
        self._ticked = now
        if self.deadline is not None and self.deadline <= now and not self.done:
            # Past the job's deadline nothing is worth running: stop it all, say why.
            reason = "the job's deadline passed before it ran"
            self._end(self.tasks.values(), reason, S.TIMED_OUT, S.FAILED, now)
        for w in self.workers.values():
            if w.rid is not None and w.asked_at + c.quote_timeout_s <= now:
                w.rid, w.declined = None, "did not answer a quote request in time"
                self.stats.negotiation["no_answer"] += 1
            if w.quote is not None and w.quote_until <= now:
                w.quote, w.room = None, 0
                self._changed(w, now)
            if w.holding and w.link == "up" and w.heard + c.silence_s <= now:
                # Through a gate, silence most likely means the gate's host vanished (no
                # FIN or RST crosses): that is regained like a circuit that broke.
                self._out.append(Close(w.ad.node_id, "heartbeat stopped"))
                lost = f"heartbeat stopped: nothing heard for {c.silence_s:g} s"
                self._link_lost(w, "heartbeat stopped", lost, now, relayed=w.relayed)
            if w.regain_by == math.inf:
                continue
            if w.regain_by <= now and w.link != "connecting":  # a dial under way may end it
                w.regain_by = w.redial_at = math.inf
                w.restored -= w.holding  # they were sent and ran, as far as we know: count them
                reason = f"its gate went away and it did not come back within {c.regain_s:g} s"
                self._lose(w, reason, now)
                continue
            if w.link == "down" and w.redial_at <= now:
                # Its ad may never change: the gate came back, or closed just that circuit.
                self._dial(w)
            self._rediscover(now)
        while self._timers and self._timers[0][0] <= now:
            deadline, tid = heapq.heappop(self._timers)
            t = self.tasks[tid]
            if t.deadline != deadline:
                continue
            if t.state in (S.SENT, S.RUNNING):
                self._stop_on_workers([t])
                reason = f"timed out after {t.spec.timeout_s:g} s"
                self._back(t, reason, now, final=S.TIMED_OUT, stalled=True)
        if self._queued and self._next_sweep <= now:
            self._next_sweep = now + 1.0
            self._strand(now)
        if self._next_rebalance <= now:
            self._next_rebalance = now + 1.0
            self._rebalance(now)
        self._pump(now)

    # -- message handlers -----------------------------------------------------------------

    def _on_quote(self, w: _Worker, m: dict[str, Any], now: float) -> None:
        q: Quote = m["quote"]
        if m["rid"] != w.rid:
            return
        w.rid = None
        assert w.public_key is not None
        if not q.verify(w.public_key) or q.scheduler != self.identity.node_id or q.job != self.job:
            self._ban(w, "sent a quote it did not sign, or one for someone else", now)
            return
        if q.capacity == 0 or q.valid_until <= now:
            # Worth nothing now (or its clock is far behind ours): as good as a decline.
            w.declined, w.ask_after = (
                "its quote was empty or already expired",
                now + DECLINE_BACKOFF_S,
            )
            return
        w.quote, w.room, w.declined = q, q.capacity, None
        # Validity is judged by our clock, and never trusted for longer than a short while.
        w.quote_until = min(q.valid_until, now + self.config.max_quote_s)
        # What it ran for us before outweighs what it says; a worker that fails or stalls
        # looks slower by its penalty, so it ranks lower on time.
        spec = self._asked.pop(w.ad.node_id, None)
        if spec is not None:
            estimate = self.predictor.estimate(
                w.ad.node_id, _model(spec), len(encode(spec.input)), claimed_run=q.run_mean or None
            )
            w.run_estimate = estimate.run_mean * self.views.penalty(w.ad.node_id, now)
        self._changed(w, now)

    def _on_lease(self, w: _Worker, m: dict[str, Any], now: float) -> None:
        ids = w.pending.pop(m["rid"], None)
        if ids is None or set(m["tasks"]) != set(ids):
            self._ban(w, "leased tasks that were not committed to it", now)
            return
        # The tasks travelled with the commitment: the lease confirms they are in its queue.

    def _on_reject(self, w: _Worker, m: dict[str, Any], now: float) -> None:
        ids = w.pending.pop(m["rid"], None) or []
        for i in ids:
            t = self.tasks[i]
            if t.state in IN_FLIGHT and t.worker == w.ad.node_id:
                self._back(t, f"commitment rejected: {m['reason']}", now, count=False)
        w.quote, w.room, w.ask_after = None, 0, now + DECLINE_BACKOFF_S
        self._changed(w, now)
        if m["busy"]:  # its room went to someone else meanwhile: ask again in a while
            w.busy_rejects += 1
            if w.busy_rejects >= MAX_BUSY_REJECTS:  # ... but not for ever
                w.declined = m["reason"]
                self._floors.clear()
            return
        w.rejects += 1
        # A worker that keeps quoting and then rejecting is out for this job: otherwise the
        # same commitment and its inputs would go back and forth for ever.
        w.declined = m["reason"] if w.rejects >= MAX_REJECTS else None
        self._floors.clear()

    def _on_result(self, w: _Worker, m: dict[str, Any], now: float) -> None:
        worker = w.ad.node_id
        t = self.tasks.get(m["task"])
        if t is None or t.worker != worker or t.state not in (S.SENT, S.RUNNING):
            if t is not None and t.state == S.COMPLETED and t.worker == worker:
                if t.receipt is not None and m["receipt"].sig == t.receipt.sig:
                    self._out.append(Send(worker, {"t": "ack", "tasks": [m["task"]]}))
            return  # a late answer for a task since placed elsewhere or cancelled
        r: Receipt = m["receipt"]
        problem, packed = self._check_receipt(w, t, r, m)
        if problem is not None:
            self._ban(w, problem, now)
            return
        self._out.append(Send(worker, {"t": "ack", "tasks": [t.spec.task_id]}))
        if m["error"] is not None:
            self._back(t, m["error"], now)
            return
        self._release(t)
        self.spent += r.price
        assert w.public_key is not None
        if self.durable:
            self.journal.append(Charged(r, w.public_key, packed, now))
        model = _model(t.spec)
        wait = max(0.0, now - t.sent_at - r.duration)  # on its queue, and on the way
        self.predictor.observe(worker, model, t.input_bytes, wait_s=wait, run_s=r.duration, now=now)
        self.views.succeeded(worker, model, r.duration, t.spec.task_id, now=now)
        t.output, t.receipt, t.error, t.progress = m["output"], r, None, 1.0
        self._move(t, S.COMPLETED, now)
        self._out.append(Settled(t.spec.task_id))

    def _check_receipt(
        self, w: _Worker, t: TaskRun, r: Receipt, m: dict[str, Any]
    ) -> tuple[str | None, bytes]:
        """What is wrong with this result and its receipt (None: nothing), and the output
        encoded (once: for its size, its hash and the record)."""
        assert w.public_key is not None
        if not r.verify(w.public_key):
            return f"receipt for {t.spec.task_id} is not signed by the worker", b""
        if (r.scheduler, r.job, r.task) != (self.identity.node_id, self.job, t.spec.task_id):
            return f"receipt for {t.spec.task_id} names another scheduler, job or task", b""
        if r.ok != (m["error"] is None):
            return f"receipt for {t.spec.task_id} disagrees with the result about success", b""
        packed = encode(m["output"] if r.ok else None)
        problem = None
        if len(packed) > self.config.max_result_bytes:
            problem = f"result of {t.spec.task_id} is over {self.config.max_result_bytes} bytes"
        elif r.ok and depth_over(m["output"], MAX_RESULT_DEPTH):
            problem = f"result of {t.spec.task_id} nests deeper than {MAX_RESULT_DEPTH} levels"
        elif r.result_hash != packed_hash(packed):
            problem = f"receipt for {t.spec.task_id} does not hash the result sent"
        elif r.ok and r.price > t.price:
            problem = f"receipt for {t.spec.task_id} charges {r.price:g}, committed {t.price:g}"
        return problem, packed

    # -- the engine -----------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        """Ask for quotes where they are missing, then commit what the quotes allow (or, late
        binding, reserve places in workers' queues)."""
        late = self.strategy.name == LATE_BINDING
        if self._reserved and (not late or not self._queued):
            self._unreserve_all()  # switched away, or nothing left to bind them to
        if not self._queued and not self._seek:
            return
        if late:
            self._reserve(now)
            return
        if self._queued and self._quotes_settled(now):
            self._commit_round(now)
        if not self._queued and not self._seek:
            return
        asked = sum(1 for w in self.workers.values() if w.rid is not None)
        if self._by_price is None:  # cheapest first; sorted again only when workers change
            self._by_price = sorted(self.workers.values(), key=lambda w: w.ad.profile.min_price)
        for w in self._by_price:
            if asked >= self.config.max_quotes:
                break
            if w.rid is not None or w.quote is not None or w.link == "down" or now < w.ask_after:
                continue
            if w.rejects >= MAX_REJECTS or w.busy_rejects >= MAX_BUSY_REJECTS:
                continue  # it took our commitments back too often
            wanted = [
                self._shape_spec[shape]
                for shape, n in self._shapes.items()
                if n > 0 and self._shape_spec[shape].need.matches(w.ad.profile)
            ] + [spec for spec in self._seek.values() if spec.need.matches(w.ad.profile)]
            if not wanted:
                continue
            if w.link == "none":
                self._dial(w)
                asked += 1
                continue
            if w.link != "up":
                continue
            spec = wanted[0]
            self._asked[w.ad.node_id] = spec
            rid = next(self._rids)
            w.rid, w.asked_at, w.ask_after = rid, now, 0.0
            asked += 1
            self.stats.negotiation["asked"] += 1
            self._out.append(
                Send(
                    w.ad.node_id,
                    {
                        "t": "quote?",
                        "rid": rid,
                        "job": self.job,
                        "tasks": min(MAX_BATCH, max(1, self._queued + self._seeking)),
                        "driver": spec.driver,
                        "model": _model(spec),
                        "max_price": spec.max_price,
                    },
                )
            )

    def _quotes_settled(self, now: float) -> bool:
        """Commit once the quotes asked for are in, or after a short wait for the slow ones:
        committing on the first answer would hand the batch to whoever is nearest, not best."""
        asked = [w.asked_at for w in self.workers.values() if w.rid is not None]
        return not asked or min(asked) + self.config.quote_wait_s <= now

    def _commit_round(self, now: float) -> None:
        self._now = now
        batches: dict[bytes, list[TaskRun]] = {}
        # Tasks that no worker can take now (their only candidates are excluded, say) step
        # aside for this round, so that they do not hold up the tasks behind them.
        aside: list[Entry] = []
        # A kind of task whose head waits for a quote or for room keeps its order, but does
        # not hold up other kinds; once every kind waits, the round is over.
        waiting: set[tuple[str, str | None, str, float]] = set()
        kinds = {shape for shape, n in self._shapes.items() if n > 0}
        stuck = 0  # aside because no worker can take them (not merely waiting for one)
        queue = self._queue
        while queue and stuck < MAX_ASIDE and len(aside) < MAX_SCAN and not kinds <= waiting:
            tid = queue.head()[3]
            t = self.tasks[tid]
            if t.state != S.QUEUED:
                queue.pop()
                continue
            shape = _shape(t.spec)
            best = None
            if shape not in waiting:
                chooser = self._chooser(shape, t.spec)
                best = chooser.pick(partial(self._fits, t))
                if best is None and self._in_time_only:
                    # No worker is expected to make the deadline: the one that comes closest.
                    best = chooser.fastest(partial(self._fits, t, in_time=False))
            if best is None:
                if shape in waiting:
                    pass
                elif any(self._candidate(t, w, now) for w in self.workers.values()):
                    waiting.add(shape)
                else:
                    stuck += 1
                aside.append(queue.pop())
                continue
            queue.pop()
            w = self.workers[best.key]
            assert w.quote is not None
            w.room -= 1
            w.batch_bytes += t.input_bytes
            self._assign(t, w, w.quote.price, now)
            self._changed(w, now)
            batches.setdefault(best.key, []).append(t)
        queue.put_back(aside)
        for w in self.workers.values():
            w.batch_bytes = 0
        for worker, runs in batches.items():
            w = self.workers[worker]
            assert w.quote is not None
            self._commit(w, runs, w.quote.price, now)

    def _assign(self, t: TaskRun, w: _Worker, price: float, now: float) -> None:
        """`t` goes to `w` at `price`: the money is held from now."""
        t.worker, t.price = w.ad.node_id, price
        self.held += price
        if not w.holding:  # silence is counted from when it holds something of ours
            w.heard = now
        w.holding.add(t.spec.task_id)
        self._move(t, S.NEGOTIATING, now)

    def _commit(self, w: _Worker, runs: list[TaskRun], price: float, now: float) -> None:
        rid = next(self._rids)
        commitment = Commitment(
            scheduler=self.identity.node_id,
            worker=w.ad.node_id,
            job=self.job,
            tasks=[t.spec.task_id for t in runs],
            price=price,
            issued_at=now,
        ).signed(self.identity)
        w.pending[rid] = commitment.tasks
        if self.durable:
            self.journal.append(Committed(commitment, w.ad.profile.addresses, now))
        for t in runs:
            self._move(t, S.SCHEDULED, now)
            self._move(t, S.SENT, now)
        self.stats.negotiation["commit"] += 1
        # The tasks go with their commitment: the worker leases and queues them at once,
        # or rejects them all; a separate dispatch would cost a round trip per batch.
        self._out.append(
            Send(
                w.ad.node_id,
                {
                    "t": "commit",
                    "rid": rid,
                    "commitment": commitment.to_wire(),
                    "run": [_wire(t) for t in runs],
                },
            )
        )

    # -- rebalancing -----------------------------------------------------------------------

    def _rebalance(self, now: float) -> None:
        """Move tasks waiting in a slow worker's queue to a worker that would have them done
        in clearly less time (and, but for MTR = ∞, for less money and time together).
        Late binding needs none of this: its tasks wait here, not in a worker's queue."""
        self._seek.clear()
        self._seeking = 0
        self._now = now
        if self.strategy.name == LATE_BINDING:
            return
        moves = 0
        self._granted = {}
        for w in list(self.workers.values()):
            waiting = [
                self.tasks[tid]
                for tid in w.holding
                if self.tasks[tid].state == S.SENT
                and self.tasks[tid].since + REBALANCE_AFTER_S <= now
                and not self.tasks[tid].moving
            ]
            if not waiting or w.link != "up":
                continue
            waiting.sort(key=lambda t: t.since)
            self._seeking += len(waiting)
            slots = _slots(w.ad.profile)
            t = waiting[-1]  # sent last: it waits longest there
            shape = _shape(t.spec)
            self._seek.setdefault(shape, t.spec)
            asking: list[str] = []
            while waiting and moves < MAX_MOVES:
                # When the last waiting there would be done: its turn, then its run.
                there = (-(-len(waiting) // slots) + 1) * w.run_estimate
                sooner = partial(self._sooner, t, w.ad.node_id, there)
                to = self._chooser(shape, t.spec).pick(sooner)
                if to is None:
                    break
                self._granted[to.key] = self._granted.get(to.key, 0) + 1
                waiting.pop()
                t.moving = True
                asking.append(t.spec.task_id)
                moves += 1
                if waiting:
                    t = waiting[-1]
                    shape = _shape(t.spec)
            if asking:
                # Only if it has not started them: one that did runs on, so none runs twice.
                rid = next(self._rids)
                w.withdrawing[rid] = asking
                self.stats.negotiation["withdraw"] += 1
                self._out.append(Send(w.ad.node_id, {"t": "withdraw", "rid": rid, "tasks": asking}))

    def _sooner(self, t: TaskRun, worker: bytes, there: float, c: Candidate) -> bool:
        """Whether `c` would have `t` done clearly sooner than `worker`, where it waits and
        would be done in `there` seconds; at a finite MTR, also for a better score."""
        if c.key == worker or not self._fits(t, c) or self._granted.get(c.key, 0) >= c.room:
            return False  # (no more moved its way than it has room for)
        # Its quote may predate tasks of ours placed there since: count those we know of,
        # so that tasks never move back and forth between two equals.
        ours = len(self.workers[c.key].holding)
        done_by = max(c.time, (-(-(ours + 1) // c.slots)) * c.run + c.wait)
        if done_by > REBALANCE_GAIN * there:
            return False
        return math.isinf(self.mtr) or c.price + self.mtr * done_by <= t.price + self.mtr * there

    # -- late binding ----------------------------------------------------------------------

    def _reserve(self, now: float) -> None:
        """Sparrow's batch sampling: keep PROBE_RATIO places reserved per queued task, in the
        queues of workers picked at random among those that could take them."""
        want = min(PROBE_RATIO * self._queued, MAX_PROBES) - self._reserved
        if want <= 0:
            return
        specs = [self._shape_spec[shape] for shape, n in self._shapes.items() if n > 0]
        picks: list[tuple[_Worker, TaskSpec]] = []
        for w in self.workers.values():
            if w.link == "down" or now < w.ask_after or w.declined is not None:
                continue
            if w.rejects >= MAX_REJECTS or w.busy_rejects >= MAX_BUSY_REJECTS:
                continue
            price = w.ad.profile.min_price
            if not self._affordable(price):
                continue  # nothing it could be given now: a place there would come back empty
            spec = next(
                (s for s in specs if s.need.matches(w.ad.profile) and price <= s.max_price), None
            )
            if spec is None:
                continue
            if w.link == "none":
                self._dial(w)
            elif w.link == "up":
                picks.append((w, spec))
        self.strategy.rng.shuffle(picks)
        for w, spec in picks:
            # A place per slot, over as many workers as it takes: the point is to find the
            # ones that free up first, not to queue deep anywhere.
            room = min(MAX_RESERVED, _slots(w.ad.profile))
            n = min(want, room - sum(w.reserved.values()))
            if n <= 0:
                continue
            rid = next(self._rids)
            w.reserved[rid] = n
            self._reserved += n
            self.stats.negotiation["reserve"] += 1
            want -= n
            self._out.append(
                Send(
                    w.ad.node_id,
                    {
                        "t": "reserve",
                        "rid": rid,
                        "job": self.job,
                        "tasks": n,
                        "driver": spec.driver,
                        "model": _model(spec),
                        "max_price": spec.max_price,
                    },
                )
            )
            if want <= 0:
                break

    def _on_ready(self, w: _Worker, rid: int, now: float) -> None:
        """A worker has a slot for one of our places: the task that is due first and that it
        can take goes there now; if there is none, the places are given up."""
        left = w.reserved.get(rid, 0)
        if left:
            self._reserved -= 1
            if left > 1:
                w.reserved[rid] = left - 1
            else:
                del w.reserved[rid]
        t = self._due_for(w) if left else None
        if t is None:
            self._reserved -= w.reserved.pop(rid, 0)
            self._out.append(Send(w.ad.node_id, {"t": "unreserve", "rid": rid}))
            # Nothing queued may go there now (tasks that failed there, or the budget):
            # places there again at once would come back just as empty.
            w.ask_after = now + DECLINE_BACKOFF_S
            return
        price = w.ad.profile.min_price
        self._assign(t, w, price, now)
        self._commit(w, [t], price, now)

    def _due_for(self, w: _Worker) -> TaskRun | None:
        """The queued task due first that `w` may take (taken off the queue), or None."""
        queue, found = self._queue, None
        aside: list[Entry] = []
        price = w.ad.profile.min_price
        while queue and len(aside) < MAX_SCAN:
            t = self.tasks[queue.head()[3]]
            if t.state != S.QUEUED:
                queue.pop()
                continue
            if self._eligible(t, w) and price <= t.spec.max_price and self._affordable(price):
                queue.pop()
                found = t
                break
            aside.append(queue.pop())
        queue.put_back(aside)
        return found

    def _unreserve_all(self) -> None:
        for w in self.workers.values():
            for rid in w.reserved:
                self._out.append(Send(w.ad.node_id, {"t": "unreserve", "rid": rid}))
            w.reserved.clear()
        self._reserved = 0

    def _forget_reservations(self, w: _Worker) -> None:
        self._reserved -= sum(w.reserved.values())
        w.reserved.clear()

    def _chooser(self, shape: tuple[str, str | None, str, float], spec: TaskSpec) -> Chooser:
        """The chooser for tasks like `spec`, over the candidates that serve them."""
        if self._choosing != self.strategy.name:  # switched while we run: choose anew
            self._choosers.clear()
            self._choosing = self.strategy.name
        chooser = self._choosers.get(shape)
        if chooser is None:
            chooser = self._choosers[shape] = self.strategy.chooser([], self.mtr)
            for c in self._cands.values():
                if self._serves(spec, self.workers[c.key]):
                    chooser.put(c)
        return chooser

    def _serves(self, spec: TaskSpec, w: _Worker) -> bool:
        q = w.quote
        return q is not None and q.price <= spec.max_price and spec.need.matches(w.ad.profile)

    def _changed(self, w: _Worker, now: float) -> None:
        """`w`'s quote, room or link changed: it becomes, stays or stops being a candidate.
        `now` NaN: its quote's validity was checked already (it only got room back)."""
        key = w.ad.node_id
        c = self._cands.get(key)
        q = w.quote
        if (
            q is None
            or w.room <= 0
            or w.link != "up"
            or w.quote_until <= now
            or (c is None and self.views.skipped(key, now if now == now else w.heard))
        ):
            if c is not None:
                del self._cands[key]
                for chooser in self._choosers.values():
                    chooser.discard(c)
            return
        ahead = max(0, q.capacity - w.room)  # placed under this quote already
        if c is None:
            profile = w.ad.profile
            c = self._cands[key] = Candidate(
                key=key,
                price=q.price,
                wait=q.wait_mean,
                run=w.run_estimate,
                slots=_slots(profile),
                room=w.room,
                ahead=ahead,
            )
        else:
            c.price, c.wait, c.run, c.room, c.ahead = (
                q.price,
                q.wait_mean,
                w.run_estimate,
                w.room,
                ahead,
            )
        for shape, chooser in self._choosers.items():
            if self._serves(self._shape_spec[shape], w):
                chooser.put(c)
            else:
                chooser.discard(c)

    def _affordable(self, price: float) -> bool:
        """Whether one more task at `price` stays within the budget, with what is held."""
        return self.spent + self.held + price <= self.budget + MONEY_EPSILON

    @property
    def _in_time_only(self) -> bool:
        """A job with both a deadline and a finite MTR scores only the workers expected to
        finish in time (MTR 0: the cheapest of those)."""
        return self.deadline is not None and not math.isinf(self.mtr)

    def _fits(self, t: TaskRun, c: Candidate, *, in_time: bool = True) -> bool:
        """Whether this task may go to `c` now: not a worker it failed on, within what is
        left of the budget and this round's commitment size, after tasks of the node's other
        jobs due first, in time for the deadline (`in_time`, if that is the job's rule), and
        at MTR 0 without one, only the cheapest worker."""
        w = self.workers[c.key]
        if w.batch_bytes and w.batch_bytes + t.input_bytes > COMMIT_BYTES:
            return False  # this round's commitment to it is full: next round
        return (
            c.key not in t.excluded
            and self._affordable(c.price)
            and (self.rival is None or t.due <= self.rival(self.job, w))
            and (
                self.deadline is None
                or not in_time
                or math.isinf(self.mtr)
                # with a margin: the estimate is a mean, and a task late is a task lost
                or self._now + DEADLINE_MARGIN * c.time <= self.deadline
            )
            and (
                self.mtr != 0.0
                or self.deadline is not None
                or c.price <= self._floor(t) + MONEY_EPSILON
            )
        )

    def _floor(self, t: TaskRun) -> float:
        """At MTR 0 waiting costs nothing and the cheapest worker must be chosen: the least
        price among the workers that could take `t` at all, busy or not (it waits for one)."""
        shape = _shape(t.spec)
        floor = self._floors.get(shape)
        now = self._ticked
        if floor is not None:  # still one that could take it? (it may have stopped answering)
            w = self.workers.get(floor[1])
            if w is None or not self._could_take(t, w, now):
                floor = None
        if floor is None:
            prices = [
                (w.ad.profile.min_price, w.ad.node_id)
                for w in self.workers.values()
                if self._could_take(t, w, now)
            ]
            floor = min(prices, default=(math.inf, b""))
            if not t.excluded:
                self._floors[shape] = floor
        return floor[0]

    def _could_take(self, t: TaskRun, w: _Worker, now: float) -> bool:
        """A candidate for `t` that we still ask: not banned, not given up for rejecting."""
        return (
            not w.banned
            and w.rejects < MAX_REJECTS
            and w.busy_rejects < MAX_BUSY_REJECTS
            and self._candidate(t, w, now)
        )

    def due_on(self, w: _Worker) -> float:
        """When the first task queued here that `w` could take must start (inf: none), for
        the node's other jobs to leave it room. Looks at the head of the queue only."""
        queue = self._queue
        while queue:
            t = self.tasks[queue.head()[3]]
            if t.state == S.QUEUED:
                # Only if it would go there: a task that waits for a cheaper worker (MTR 0),
                # or for money, claims nothing, or it would hold the other jobs up for ever.
                price = w.quote.price if w.quote is not None else w.ad.profile.min_price
                ok = (
                    self._eligible(t, w)
                    and price <= t.spec.max_price
                    and self._affordable(price)
                    and (
                        self.mtr != 0.0
                        or self.deadline is not None
                        or price <= self._floor(t) + MONEY_EPSILON
                    )
                )
                return t.due if ok else math.inf
            queue.pop()
        return math.inf

    def _eligible(self, t: TaskRun, w: _Worker) -> bool:
        return w.ad.node_id not in t.excluded and t.spec.need.matches(w.ad.profile)

    def _strand(self, now: float) -> None:
        """Tasks no known worker can take: look for more workers, and fail them in the end."""
        c = self.config
        stranded = []
        # Tasks of one shape share their candidates but for the workers each excludes: one
        # pass over the workers per shape, not per task.
        by_shape: dict[tuple[str, str | None, str, float], list[bytes]] = {}
        for tid in set(self._queue.task_ids()):  # a task re-queued may have a stale entry too
            t = self.tasks[tid]
            if t.state != S.QUEUED:
                continue
            shape = _shape(t.spec)
            if shape not in by_shape:
                by_shape[shape] = [
                    w.ad.node_id
                    for w in self.workers.values()
                    if self._candidate(t, w, now, for_any=True)
                ]
            if any(worker not in t.excluded for worker in by_shape[shape]):
                t.stranded_since = math.nan
                continue
            if math.isnan(t.stranded_since):
                t.stranded_since = now
            stranded.append(t)
        if stranded:
            self._rediscover(now)
        for t in stranded:
            if t.stranded_since + c.no_worker_s <= now:
                t.error = self._why_no_worker(t, now)
                self._move(t, S.FAILED, now)
                self._out.append(Settled(t.spec.task_id))

    def _candidate(self, t: TaskRun, w: _Worker, now: float, *, for_any: bool = False) -> bool:
        """Whether `w` may still take `t` (`for_any`: any task of its shape): it matches, is
        reachable, has not turned this job down nor been skipped for failing, and its price
        fits both the task's limit and what is left of the budget."""
        price = w.quote.price if w.quote is not None else w.ad.profile.min_price
        return (
            (t.spec.need.matches(w.ad.profile) if for_any else self._eligible(t, w))
            and w.link != "down"
            and (w.declined is None or bool(w.holding))
            and (bool(w.holding) or not self.views.skipped(w.ad.node_id, now))
            and price <= t.spec.max_price
            # money committed elsewhere comes back if those tasks fail: wait for them
            and (self.held > MONEY_EPSILON or self.spent + price <= self.budget + MONEY_EPSILON)
        )

    def _why_no_worker(self, t: TaskRun, now: float) -> str:
        cheapest = min((w.ad.profile.min_price for w in self.workers.values()), default=0.0)
        if not self._affordable(cheapest):
            return f"the job's budget is spent ({self.spent:g} paid, {self.held:g} committed)"
        if not self.workers:
            return f"no worker found that meets {t.spec.need}"
        skipped = "skipped for now: it kept failing or stalling"
        reasons = Counter(
            w.declined
            or (skipped if self.views.skipped(w.ad.node_id, now) else None)
            or "unreachable"
            for w in self.workers.values()
            if t.spec.need.matches(w.ad.profile)
        )
        tried = len(t.excluded)
        if not reasons:
            return f"none of the {len(self.workers)} workers found meets {t.spec.need}"
        summary = "; ".join(f"{r} ({n})" for r, n in reasons.most_common(3))
        return f"no worker would take it after {tried} tried: {summary}"

    def _dial(self, w: _Worker) -> None:
        """Open a link to `w` at the addresses its ad gives (a redial due is then moot)."""
        w.link, w.redial_at = "connecting", math.inf
        self._out.append(Connect(w.ad.node_id, w.ad.profile.addresses))

    def _rediscover(self, now: float) -> None:
        """Ask the DHT for workers again, at most once every `rediscover_s`."""
        if self._last_discover + self.config.rediscover_s <= now:
            self._last_discover = now
            self._out.append(Discover())

    # -- task moves -----------------------------------------------------------------------

    def _move(self, t: TaskRun, new: TaskState, now: float) -> None:
        queued_since = t.since
        old, t.state, t.since = t.state, t.state.to(new), now
        if new.final:
            self.stats.outcomes[new.value] += 1
        elif old == S.QUEUED and new == S.NEGOTIATING:
            self.stats.queue_wait.observe(now - queued_since)
        if self.durable:
            self.journal.append(
                Moved(
                    t.spec.task_id,
                    self.job,
                    old.value,
                    new.value,
                    now,
                    t.error,
                    t.worker,
                    t.price if t.worker is not None else 0.0,
                    t.attempts,
                )
            )
        self._final += new.final
        if (new == S.QUEUED) != (old == S.QUEUED):
            shape = _shape(t.spec)
            self._queued += 1 if new == S.QUEUED else -1
            self._shapes[shape] += 1 if new == S.QUEUED else -1
            self._shape_spec.setdefault(shape, t.spec)
        if new == S.SENT:
            self._sent(t, now)
        elif new == S.RUNNING:
            self._timer(t, now + t.spec.timeout_s + self.config.timeout_grace_s)
        else:
            t.deadline = math.inf

    def _sent(self, t: TaskRun, now: float) -> None:
        """`t` is on a worker from `now`: it may wait in that worker's short queue before it
        starts, so it gets QUEUE_ALLOWANCE timeouts to be seen running."""
        t.sent_at = now
        self._timer(t, now + t.spec.timeout_s * QUEUE_ALLOWANCE + self.config.timeout_grace_s)

    def _timer(self, t: TaskRun, deadline: float) -> None:
        t.deadline = deadline
        heapq.heappush(self._timers, (deadline, t.spec.task_id))

    def _enqueue(self, t: TaskRun, now: float) -> None:
        self._move(t, S.QUEUED, now)
        if not t.retry:  # a retry keeps its place in time: it is served first anyway
            t.due = latest_start(now, t.spec.priority, t.spec.index, deadline=self.deadline)
        self._queue.push(t.spec.task_id, t.due, t.spec.index, retry=t.retry)

    def _release(self, t: TaskRun) -> None:
        t.moving = False
        if t.worker is not None:
            self.held -= t.price
            if abs(self.held) < MONEY_EPSILON:
                self.held = 0.0
            w = self.workers[t.worker]
            w.holding.discard(t.spec.task_id)
            if not w.holding and w.regain_by < math.inf:  # nothing left to wait for
                w.regain_by = w.redial_at = math.inf
            w.room += 1 if w.quote is not None else 0
            self._changed(w, math.nan)
            w.ask_after = 0.0  # it has room again

    def _back(
        self,
        t: TaskRun,
        reason: str,
        now: float,
        *,
        count: bool = True,
        final: TaskState = S.FAILED,
        stalled: bool = False,
    ) -> None:
        """Put a task back in the queue, away from its worker, or end it out of retries.
        `count`: the worker failed it (else it never ran there); `stalled`: by going silent
        or running out of time, which ranks a worker lower than an error does."""
        worker = t.worker
        self._release(t)
        t.error, t.worker, t.progress = reason, None, 0.0
        if count:
            t.attempts += 1
            if worker is not None:
                t.excluded.add(worker)
                self.views.failed(worker, t.spec.task_id, reason, now=now, stalled=stalled)
                self._floors.clear()
        if t.attempts > t.spec.retries:
            self._move(t, final, now)
            self._out.append(Settled(t.spec.task_id))
            return
        t.retry = True
        self.stats.outcomes["retried"] += 1
        self._enqueue(t, now)

    def _lose(self, w: _Worker, reason: str, now: float, *, stalled: bool = True) -> None:
        w.pending.clear()
        for tid in list(w.holding):
            t = self.tasks[tid]
            ran = t.state in (S.SENT, S.RUNNING) and tid not in w.restored
            self._back(t, reason, now, count=ran, stalled=stalled)
        w.holding.clear()

    def _ban(self, w: _Worker, reason: str, now: float) -> None:
        """A worker that broke the protocol: drop it for this job, replay its tasks elsewhere."""
        self._out.append(Close(w.ad.node_id, reason))
        w.link, w.rid, w.quote, w.room, w.declined = "down", None, None, 0, reason
        w.banned = True
        self._floors.clear()
        self._changed(w, now)
        self._forget_reservations(w)
        for tid in w.holding:
            self.tasks[tid].excluded.add(w.ad.node_id)
        self._lose(w, f"worker dropped: {reason}", now, stalled=False)


def task_id_for(job: str, index: int) -> str:
    """Task ids name their job, so answers on a channel shared by jobs find their way."""
    return f"{job}/{index}"


def job_of(task_id: str) -> str:
    return task_id.rpartition("/")[0]


def _slots(profile: Profile) -> int:
    """Tasks a worker runs at once, as far as its ad tells: one per GPU, or its free slots."""
    return max(1, len(profile.gpus), profile.free_slots)


def _shape(spec: TaskSpec) -> tuple[str, str | None, str, float]:
    return (spec.driver, _model(spec), str(spec.need), spec.max_price)


def _model(spec: TaskSpec) -> str | None:
    for c in spec.need.clauses:
        if c.field in ("model", "loaded"):
            return str(c.value)
    return None


def _wire(t: TaskRun) -> dict[str, Any]:
    return {
        "id": t.spec.task_id,
        "driver": t.spec.driver,
        "model": _model(t.spec),
        "input": t.spec.input,
        "timeout": t.spec.timeout_s,
    }
