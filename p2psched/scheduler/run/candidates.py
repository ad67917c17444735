"""Which workers may take which tasks now: the candidate index (a chooser per kind of task
over the workers whose quotes serve it, kept current as quotes, room and links change), and
the rules a task and a worker must both meet (need, exclusions, price, budget, deadline, the
node's other jobs, at MTR 0 the cheapest worker only, copies of a task apart, and when the job
says so a capacity proved).
"""

from __future__ import annotations

import math

from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run.base import RunBase
from p2psched.scheduler.run.budget import MONEY_EPSILON
from p2psched.scheduler.run.config import (
    APART_WAIT_S,
    DEADLINE_MARGIN,
    MAX_BUSY_REJECTS,
    MAX_REJECTS,
)
from p2psched.scheduler.run.links import DOWN, UP
from p2psched.scheduler.run.tasks import Shape, TaskRun, gpus_of, shape_of, slots_of
from p2psched.scheduler.run.workers import WorkerState
from p2psched.scheduler.strategy import Candidate, Chooser
from p2psched.wire.address import ip_of, is_relayed, prefix, split_host_port
from p2psched.wire.deal import COMMIT_BYTES

S = TaskState


class Candidates(RunBase):
    def _chooser(self, shape: Shape, spec: TaskSpec) -> Chooser:
        """The chooser for tasks like `spec`, over the candidates that serve them."""
        if self._choosing != self.strategy.name:  # switched while we run: choose anew
            self._choosers.clear()
            self._choosing = self.strategy.name
        chooser = self._choosers.get(shape)
        if chooser is None:
            chooser = self._choosers[shape] = self.strategy.chooser([], self.mtr)
            for c in self._cands.values():
                if self._serves(spec, self.workers[c.worker]):
                    chooser.put(c)
        return chooser

    def _serves(self, spec: TaskSpec, w: WorkerState) -> bool:
        """Whether `w`'s quote serves tasks like `spec`: priced for their GPUs, within their
        price limit, on a worker that meets their need."""
        q = w.quote
        return (
            q is not None
            and q.gpus == gpus_of(spec)
            and q.price <= spec.max_price
            and spec.need.matches(w.ad.profile)
        )

    def _changed(self, w: WorkerState, now: float) -> None:
        """`w`'s quote, room or link changed: it becomes, stays or stops being a candidate.
        `now` NaN: its quote's validity was checked already (it only got room back)."""
        key = w.ad.node_id
        c = self._cands.get(key)
        q = w.quote
        if (
            q is None
            or w.room <= 0
            or w.link != UP
            or w.quote_until <= now
            or (c is None and self.views.skipped(key, now if now == now else w.heard))
            or (self.verify.challenge and self.views.capacity(key) != "passed")
        ):
            self._uncandidate(key)
            return
        ahead = max(0, q.capacity - w.room)  # placed under this quote already
        if c is None:
            c = self._cands[key] = Candidate(
                worker=key,
                price=q.price,
                wait=q.wait_mean,
                run=w.run_estimate,
                slots=slots_of(w.ad.profile),
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

    def _uncandidate(self, key: bytes) -> None:
        """`key` is no candidate (any more): none of the choosers offers it."""
        c = self._cands.pop(key, None)
        if c is not None:
            for chooser in self._choosers.values():
                chooser.discard(c)

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
        w = self.workers[c.worker]
        if w.batch_bytes and w.batch_bytes + t.input_bytes > COMMIT_BYTES:
            return False  # this round's commitment to it is full: next round
        if not (w.batch_bytes or t.retry or self._wants_batch(w)):
            return False  # below its low-water mark: a batch later (a retry goes first)
        return (
            c.worker not in t.excluded
            and (t.apart is None or self._apart(t, w))
            and self.money.affordable(c.price)
            and (self.rival is None or t.due <= self.rival(self.job, w))
            and (
                self.deadline is None
                or not in_time
                or math.isinf(self.mtr)
                # with a margin: the estimate is a mean, and a task late is a task lost
                or self._now + DEADLINE_MARGIN * c.time <= self.deadline
            )
            # (tested here, not in a helper: this runs for every candidate of every pick)
            and (self.mtr != 0.0 or self.deadline is not None or self._at_floor(t, c.price))
        )

    def _wants_batch(self, w: WorkerState) -> bool:
        """Whether `w` takes a commitment now: once its room is back to half of what it
        quoted (a low-water mark: one signature and one lease for several tasks, not one per
        slot freed), or sooner when it would run dry (it holds no more than it runs) or all
        the tasks left fit."""
        assert w.quote is not None
        half = min((w.quote.capacity + 1) // 2, self._queued)
        return w.room >= half or len(w.holding) <= slots_of(w.ad.profile)

    def _apart(self, t: TaskRun, w: WorkerState) -> bool:
        """Whether `w` is apart enough from the workers `t`'s other copies went to: never one
        of their operators (its label `operator`), and not on their /16 networks while `t` has
        waited less than APART_WAIT_S (after that, where there was no other to be had)."""
        assert t.apart is not None
        marks = marks_of(w)
        return not any(
            m in t.apart and (m.startswith("op:") or self._now - t.since < APART_WAIT_S)
            for m in marks
        )

    def _keep_apart(self, t: TaskRun, w: WorkerState) -> None:
        """`t` goes to `w`: its other copies keep away from `w`, its operator and its network."""
        marks = marks_of(w)
        for tid in self.groups[self._group_of[t.spec.task_id]].copies:
            other = self.tasks[tid]
            if other is not t:
                other.excluded.add(w.ad.node_id)
                other.apart = (other.apart or set()) | marks

    def _at_floor(self, t: TaskRun, price: float) -> bool:
        """At MTR 0 without a deadline only the cheapest worker that could take `t` may."""
        return price <= self._floor(t) + MONEY_EPSILON

    def _floor(self, t: TaskRun) -> float:
        """At MTR 0 waiting costs nothing and the cheapest worker must be chosen: the least
        price among the workers that could take `t` at all, busy or not (it waits for one)."""
        shape = shape_of(t.spec)
        floor = self._floors.get(shape)
        now = self._ticked
        if floor is not None:  # still one that could take it? (it may have stopped answering)
            w = self.workers.get(floor[1])
            if w is None or not self._could_take(t, w, now):
                floor = None
        if floor is None:
            prices = [
                (w.price, w.ad.node_id)
                for w in self.workers.values()
                if self._could_take(t, w, now)
            ]
            floor = min(prices, default=(math.inf, b""))
            if not t.excluded:
                self._floors[shape] = floor
        return floor[0]

    def _could_take(self, t: TaskRun, w: WorkerState, now: float) -> bool:
        """A candidate for `t` that we still ask: not banned, not given up for rejecting."""
        return (
            not w.banned
            and w.rejects < MAX_REJECTS
            and w.busy_rejects < MAX_BUSY_REJECTS
            and self._candidate(t, w, now)
        )

    def due_on(self, w: WorkerState) -> float:
        """When the first task queued here that `w` could take must start (inf: none), for
        the node's other jobs to leave it room. Looks at the head of the queue only."""
        queue = self._queue
        while queue:
            t = self.tasks[queue.head()[3]]
            if t.state == S.QUEUED:
                # Only if it would go there: a task that waits for a cheaper worker (MTR 0),
                # or for money, claims nothing, or it would hold the other jobs up for ever.
                price = w.price
                ok = (
                    self._eligible(t, w)
                    and price <= t.spec.max_price
                    and self.money.affordable(price)
                    and (self.mtr != 0.0 or self.deadline is not None or self._at_floor(t, price))
                )
                return t.due if ok else math.inf
            queue.pop()
        return math.inf

    def _eligible(self, t: TaskRun, w: WorkerState) -> bool:
        return (
            w.ad.node_id not in t.excluded
            and t.spec.need.matches(w.ad.profile)
            and (t.apart is None or self._apart(t, w))
        )

    def _candidate(self, t: TaskRun, w: WorkerState, now: float, *, for_any: bool = False) -> bool:
        """Whether `w` may still take `t` (`for_any`: any task of its shape): it matches, is
        reachable, has not turned this job down nor been skipped for failing, and its price
        fits both the task's limit and what is left of the budget."""
        price = w.price
        return (
            (t.spec.need.matches(w.ad.profile) if for_any else self._eligible(t, w))
            and w.link != DOWN
            and not (self.verify.challenge and self.views.capacity(w.ad.node_id) == "failed")
            and (w.declined is None or bool(w.holding))
            and (bool(w.holding) or not self.views.skipped(w.ad.node_id, now))
            and price <= t.spec.max_price
            and self.money.may_come(price)
        )


def marks_of(w: WorkerState) -> set[str]:
    """What copies of a task keep apart by: the worker's operator (its label `operator`, if it
    gives one) and the /16 (IPv4) or /48 (IPv6) networks of its direct addresses (but
    loopback: a devnet's workers share one machine, and no network)."""
    marks = set()
    operator = w.ad.profile.label("operator")
    if operator is not None:
        marks.add(f"op:{operator}")
    for address in w.ad.profile.addresses:
        if is_relayed(address):
            continue
        try:
            host = split_host_port(address)[0]
        except ValueError:
            continue
        ip = ip_of(host)
        net = prefix(host, 16, 48)
        if net is not None and ip is not None and not ip.is_loopback:  # (one machine's devnet)
            marks.add(f"net:{net}")
    return marks
