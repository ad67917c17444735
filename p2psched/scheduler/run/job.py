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

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from random import Random
from typing import Any

from p2psched.identity import Identity
from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.predictor import Predictor
from p2psched.scheduler.queue import TaskQueue
from p2psched.scheduler.run.actions import Action, Close, Settled
from p2psched.scheduler.run.agreement import VerifyPolicy
from p2psched.scheduler.run.budget import Budget
from p2psched.scheduler.run.config import DispatchConfig
from p2psched.scheduler.run.late import LateBinding
from p2psched.scheduler.run.links import CONNECTING, DOWN, NONE, UP
from p2psched.scheduler.run.rebalance import Rebalancing
from p2psched.scheduler.run.stats import DispatchStats
from p2psched.scheduler.run.tasks import Spooled, TaskRun
from p2psched.scheduler.run.verification import Verification
from p2psched.scheduler.run.workers import WorkerState
from p2psched.scheduler.strategy import LATE_BINDING, Strategy
from p2psched.scheduler.worker_views import WorkerViews
from p2psched.store import StoredTask
from p2psched.wire.address import is_relayed
from p2psched.wire.codec import decode, encode
from p2psched.wire.messages import (
    Ack,
    Beat,
    Decline,
    Lease,
    Message,
    Partial,
    QuoteReply,
    Ready,
    Reject,
    Result,
    Send,
    Withdrawn,
    kind,
)

S = TaskState


class JobRun(LateBinding, Rebalancing, Verification):
    """One job on its scheduler: the façade its shell (and `bench/quality.py`) drive. Events
    go in (`add_workers`, `connected`, `disconnected`, `receive`, `tick`, `cancel`, ...);
    `actions()` gives what to do; `next_deadline()` says when to `tick` next."""

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
        paid_only: bool = False,
        rival: Callable[[str, WorkerState], float] | None = None,
        stats: DispatchStats | None = None,
        verify: VerifyPolicy | None = None,
        rng: Random | None = None,
    ) -> None:
        self.identity = identity
        self.stats = DispatchStats() if stats is None else stats
        # Shared by the node's jobs: switching strategy takes effect for all at once, and what
        # one job learns of a worker's speed and reliability serves the others.
        # (`is None`, not `or`: an empty predictor or record has a length of 0, and is falsy)
        self.strategy = Strategy() if strategy is None else strategy
        self.predictor = Predictor() if predictor is None else predictor
        self.views = WorkerViews() if views is None else views
        self.deadline = deadline
        self.job = job
        self.mtr = mtr
        self.money = Budget(budget)
        self.config = config or DispatchConfig()
        self.tasks = {t.task_id: TaskRun(t, input_bytes=len(encode(t.input))) for t in tasks}
        self.workers = {}
        self.unmatched = {}
        self._queue = TaskQueue()
        self._queued = self._final = 0
        self._shapes = Counter()
        self._shape_spec, self._shape_input = {}, {}
        self._timers = []
        self._next_sweep = now
        self._ticked = -math.inf
        self._rids = rids if rids is not None else itertools.count(1)
        self._out = []
        self.journal = []
        self.durable = durable
        self.paid_only = paid_only
        self.rival = rival
        self._reserved = 0
        self._by_price = None
        self._cands, self._choosers, self._choosing = {}, {}, self.strategy.name
        self._asked, self._seek, self._seeking, self._floors = {}, {}, 0, {}
        self._soonest = math.inf
        self._now = now
        self._granted = {}
        self._next_rebalance = self._last_discover = self.started = now
        self.verify = VerifyPolicy() if verify is None else verify
        self.groups, self._group_of, self._announced = {}, {}, set()
        self._rng = Random() if rng is None else rng
        self._ending = False
        self._challenged_at = {}
        for run in list(self.tasks.values()):
            self._enqueue(run, now, "submitted")
        if self.verify.copies:
            self._open_groups(list(self.tasks), now)

    # -- what the shell reads -------------------------------------------------------------

    def actions(self) -> list[Action]:
        out, self._out = self._out, []
        if self.groups:  # a task settles once, with its group: not for each of its copies
            out = [a for a in out if not isinstance(a, Settled) or self._settles(a.task_id)]
        return out

    def _settles(self, task_id: str) -> bool:
        if task_id in self._announced:
            self._announced.discard(task_id)
            return True
        return task_id not in self._group_of

    @property
    def done(self) -> bool:
        return self._final == len(self.tasks)

    def public_key_of(self, worker: bytes) -> bytes | None:
        w = self.workers.get(worker)
        return w.public_key if w is not None else None

    def dealt_with(self, worker: bytes) -> bool:
        """Whether `worker` said what it is to this job before (on a channel that was up), or
        holds tasks of it (it leased them before we restarted): its results may come first."""
        w = self.workers.get(worker)
        return w is not None and (w.public_key is not None or bool(w.holding))

    def counts(self) -> Counter[str]:
        """Its tasks by state; a task run in copies counted once, by `group_state`."""
        if not self.groups:
            return Counter(t.state.value for t in self.tasks.values())
        return Counter(self.group_state(tid).value for tid in self.groups)

    @property
    def total(self) -> int:
        """Its tasks (the copies of a task that a job verifies not counted)."""
        return len(self.groups) if self.groups else len(self.tasks)

    def unmatched_report(self) -> list[dict[str, Any]]:
        """Per need no worker was found for: its tasks still queued, and why none matched."""
        queued = Counter(t.spec.need for t in self.tasks.values() if t.state == S.QUEUED)
        return [
            {"need": str(need), "tasks": queued[need], "why": why}
            for need, why in self.unmatched.items()
            if queued[need]
        ]

    def next_deadline(self) -> float:
        c = self.config
        asked = [w.asked_at for w in self.workers.values() if w.rid]
        times = [t + c.quote_timeout_s for t in asked]
        # Two deadlines only prompt a look at the quotes: once a tick has passed them, the
        # look was taken, and repeating them would spin.
        awaited = self._awaited()
        soft = [min(awaited) + c.quote_wait_s] if awaited else []
        times += [
            w.heard + c.silence_s for w in self.workers.values() if w.holding and w.link == UP
        ]
        times += [w.quote_until for w in self.workers.values() if w.quote]
        regaining = [w for w in self.workers.values() if w.regain_by < math.inf]
        if regaining:
            times.append(self._last_discover + c.rediscover_s)
            # Not while a dial is under way: that regain ends when the dial does.
            times += [w.regain_by for w in regaining if w.link != CONNECTING]
            times += [w.redial_at for w in regaining if w.link == DOWN]
        times.append(self._next_timer())
        if self.deadline is not None and not self.done:
            times.append(self.deadline)
        if self._queued:
            times.append(self._next_sweep)
            soft += [w.ask_after for w in self.workers.values()]
        times += [t for t in soft if t > self._ticked]
        return min(times, default=math.inf)

    # -- events ---------------------------------------------------------------------------

    def add_workers(self, ads: Iterable[WorkerAd], now: float) -> None:
        ads = list(ads)
        for ad in ads:
            if ad.node_id == self.identity.node_id:
                continue
            w = self.workers.get(ad.node_id)
            if w is None:
                self.workers[ad.node_id] = WorkerState(ad)
                self._by_price = None
                self._floors.clear()
            elif w.ad.seq < ad.seq:
                w.ad = ad
                self._by_price = None
                self._floors.clear()
                if w.link == DOWN and not w.banned:  # a fresh ad: it may be back
                    w.relink(NONE)
                if w.regain_by < math.inf and w.link == NONE:  # back, through another gate
                    self._dial(w)
                elif w.regain_by < math.inf and w.link == CONNECTING:
                    w.redial_at = now  # (to its old address): if that fails, the new one at once
        for need in [n for n in self.unmatched if any(n.matches(a.profile) for a in ads)]:
            del self.unmatched[need]
        self._pump(now)

    def no_worker_found(self, need: Need, why: str) -> None:
        """A look in the DHT found no worker that meets `need`; `why` names the nearest
        misses. Said in the status at once; a worker found later that meets it clears it."""
        if not any(need.matches(w.ad.profile) for w in self.workers.values()):
            self.unmatched[need] = why

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
        nothing here is journaled (it is on record already). A task run in copies gets back
        the copies it had, results waiting for a verdict are judged again."""
        if self.groups:
            self._restore_copies(tasks, now)
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
            elif state.final:
                self._restore_final(t, st, state)
            elif state == S.VERIFYING:
                self._restore_verifying(t, st)
            elif st.worker is not None:  # (one never sent stays queued)
                self._restore_held(t, st, addresses, now)
        if self.groups:
            self._restore_verdicts(now)
        for w in self.workers.values():
            if w.restored and w.link == NONE:
                if any(is_relayed(a) for a in w.ad.profile.addresses):
                    # Reached through a gate: while we were down it may have moved to another,
                    # so a failed dial waits for its fresh ad, as a broken relayed link does.
                    w.regain_by = now + self.config.regain_s
                self._dial(w)

    def _restore_final(self, t: TaskRun, st: StoredTask, state: TaskState) -> None:
        self._load(t, state, st.since)
        self._restore_result(t, st)
        # (disputed, or failed with no quorum: its result was not paid; a copy stopped with a
        # result, only if that agrees with the one kept: `_restore_verdicts` says)
        unpaid = (S.DISPUTED, S.FAILED, *((S.ABORTED,) if t.spec.task_id in self._group_of else ()))
        if st.receipt is not None and st.receipt.ok and state not in unpaid:
            self.money.pay(st.receipt.price)
            t.progress = 1.0

    def _restore_result(self, t: TaskRun, st: StoredTask) -> None:
        t.worker, t.price = st.worker, st.price
        t.receipt = st.receipt
        if st.output_file is not None:
            t.output = Spooled.IN_STORE
        elif st.output is not None:
            t.output = decode(st.output, self.config.max_result_bytes)

    def _restore_verifying(self, t: TaskRun, st: StoredTask) -> None:
        """A result that waited for its copies' verdict: held again, judged again."""
        self._load(t, S.VERIFYING, st.since)
        self._restore_result(t, st)
        if st.receipt is None:  # (its result row is written with its move: never so)
            return
        t.worker, t.price, t.progress = None, st.receipt.price, 1.0
        self.money.hold(t.price, awaiting=True)

    def _restore_held(
        self,
        t: TaskRun,
        st: StoredTask,
        addresses: Callable[[bytes], tuple[str, ...]],
        now: float,
    ) -> None:
        assert st.worker is not None
        w = self.workers.get(st.worker)
        if w is None:
            # Known only from the store until discovery brings its ad (seq 0 loses).
            profile = Profile(cpu_model="", cpu_cores=0, ram_gb=0.0, addresses=addresses(st.worker))
            w = self.workers[st.worker] = WorkerState(WorkerAd(st.worker, profile, 0, now + 3600))
            self._by_price = None
            self._floors.clear()
        self._load(t, S.SENT, now)
        self._sent(t, now)
        t.sent_at = math.nan  # sent before the restart: its run time is not ours to measure
        t.worker, t.price = st.worker, st.price
        self.money.hold(st.price)
        w.holding.add(t.spec.task_id)
        w.restored.add(t.spec.task_id)

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
            self._enqueue(run, now, "added to the running job")
        if self.verify.copies:
            self._open_groups(ids, now)
        self._pump(now)

    def connected(
        self, worker: bytes, public_key: bytes, now: float, *, relayed: bool = False
    ) -> None:
        """The channel to `worker` is up (`relayed`: through a gate's circuit)."""
        w = self.workers[worker]
        w.relink(UP)
        w.public_key, w.heard, w.relayed = public_key, now, relayed
        w.regain_by = w.redial_at = math.inf  # its first heartbeat tells what it still has
        self._changed(w, now)  # (a quote adopted while it was being dialled counts now)
        self._challenge_if_needed(w, now)
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

    def _link_lost(
        self, w: WorkerState, reason: str, lost: str, now: float, *, relayed: bool
    ) -> None:
        """The link to `w` is down (it broke, could not be opened, or went silent and was
        closed). A relayed one that broke, or one being regained, keeps its tasks for a while
        (see `_regain`); otherwise its tasks go back to the queue, `lost` saying why."""
        w.relink(DOWN)
        w.rid, w.quote, w.room = None, None, 0
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

    def _regain(self, w: WorkerState, now: float) -> None:
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

    def receive(self, worker: bytes, message: Message, now: float) -> None:
        """A checked message (see `wire.messages.parse`) from a connected worker."""
        w = self.workers.get(worker)
        if w is None or w.link != UP:
            return
        w.heard = now
        handler = _HANDLERS.get(type(message))
        if handler is None:
            self._ban(w, f"sent a {kind(message)!r} message, which workers do not send", now)
        else:
            if type(message) in _NEGOTIATION:
                self.stats.negotiation[kind(message)] += 1
            handler(self, w, message, now)
        self._pump(now)

    def refuse_result(self, worker: bytes, now: float, *, task_id: str, reason: str) -> None:
        """A result from `worker` for `task_id` that was not well-formed (`reason` says how):
        the task fails there (a try counted, that worker excluded), as if its driver had
        failed; the worker's other tasks go on."""
        t = self.tasks.get(task_id)
        w = self.workers.get(worker)
        if t is None or w is None or t.worker != worker or t.state not in (S.SENT, S.RUNNING):
            return
        self._out.append(Send(worker, Ack([task_id])))  # it need not send that one again
        self._back(t, f"its worker sent a malformed result ({reason})", now)
        self._pump(now)

    def cancel(self, task_ids: Iterable[str] | None, now: float) -> list[str]:
        """Abort these tasks (all when None) wherever they are, with their copies; returns
        those aborted."""
        if task_ids is not None and self.groups:
            bases = {self._group_of.get(i, i) for i in task_ids}
            task_ids = [c for b in bases for c in self._copies_of(b)]
        chosen = self.tasks.values() if task_ids is None else [self.tasks[i] for i in task_ids]
        ended = self._end(chosen, "cancelled", S.ABORTED, S.ABORTED, now)
        self._queue.prune(lambda tid: self.tasks[tid].state == S.QUEUED)
        return ended

    def abandon(self, reason: str, now: float) -> None:
        """End every task that is not final as failed (the job cannot go on)."""
        self._end(self.tasks.values(), reason, S.FAILED, S.FAILED, now)

    def tick(self, now: float) -> None:
        self._ticked = now
        if self.deadline is not None and self.deadline <= now and not self.done:
            # Past the job's deadline nothing is worth running: stop it all, say why.
            reason = "the job's deadline passed before it ran"
            self._end(self.tasks.values(), reason, S.TIMED_OUT, S.FAILED, now)
        for w in self.workers.values():
            self._tick_worker(w, now)
            if self.verify.challenge and w.link == UP:
                self._challenge_if_needed(w, now)
        self._expire(now)
        if self._queued and self._next_sweep <= now:
            self._next_sweep = now + 1.0
            self._strand(now)
        if self._next_rebalance <= now:
            self._next_rebalance = now + 1.0
            self._rebalance(now)
        self._pump(now)

    def _tick_worker(self, w: WorkerState, now: float) -> None:
        """A worker's timers: its quote request unanswered or its quote expired, its silence
        while it holds our tasks, and, while it is being regained, a redial or giving up."""
        c = self.config
        if w.rid is not None and w.asked_at + c.quote_timeout_s <= now:
            w.rid, w.declined = None, "did not answer a quote request in time"
            self.stats.negotiation["no_answer"] += 1
        if w.quote is not None and w.quote_until <= now:
            w.quote, w.room = None, 0
            self._changed(w, now)
        if w.holding and w.link == UP and w.heard + c.silence_s <= now:
            # Through a gate, silence most likely means the gate's host vanished (no
            # FIN or RST crosses): that is regained like a circuit that broke.
            self._out.append(Close(w.ad.node_id, "heartbeat stopped"))
            lost = f"heartbeat stopped: nothing heard for {c.silence_s:g} s"
            self._link_lost(w, "heartbeat stopped", lost, now, relayed=w.relayed)
        if w.regain_by == math.inf:
            return
        if w.regain_by <= now and w.link != CONNECTING:  # a dial under way may end it
            w.regain_by = w.redial_at = math.inf
            w.restored -= w.holding  # they were sent and ran, as far as we know: count them
            reason = f"its gate went away and it did not come back within {c.regain_s:g} s"
            self._lose(w, reason, now)
            return
        if w.link == DOWN and w.redial_at <= now:
            # Its ad may never change: the gate came back, or closed just that circuit.
            self._dial(w)
        self._rediscover(now)

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
        self._ask_quotes(now)


# What a worker may say, and who in the run hears it. (Each handler takes its own type of
# message: the table is what pairs them, so it is typed loosely.)
_HANDLERS: dict[type[Message], Callable[[JobRun, WorkerState, Any, float], None]] = {
    QuoteReply: JobRun._on_quote,
    Decline: JobRun._on_decline,
    Ready: JobRun._on_ready,
    Lease: JobRun._on_lease,
    Withdrawn: JobRun._on_withdrawn,
    Reject: JobRun._on_reject,
    Beat: JobRun._on_beat,
    Partial: JobRun._on_partial,
    Result: JobRun._on_result,
}
# Steps of the deal, counted for the node's metrics by their names on the wire.
_NEGOTIATION = frozenset({QuoteReply, Decline, Ready, Lease, Reject, Withdrawn})
