"""Rebalancing: tasks waiting in a slow worker's queue move to a worker that would have them
done in clearly less time (and, but for MTR = infinity, for less money and time together).
Late binding needs none of this: its tasks wait on the scheduler, not in a worker's queue.

Promises: a task is asked back only if it has not started (a started one runs on, so none
runs twice); no more tasks go a worker's way than it has room for; at most `MAX_MOVES` per
sweep.
"""

from __future__ import annotations

import math
from functools import partial

from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run.actions import Send
from p2psched.scheduler.run.config import MAX_MOVES, REBALANCE_AFTER_S, REBALANCE_GAIN
from p2psched.scheduler.run.links import UP
from p2psched.scheduler.run.moves import TaskMoves
from p2psched.scheduler.run.tasks import TaskRun, shape_of, slots_of
from p2psched.scheduler.run.workers import WorkerState
from p2psched.scheduler.strategy import LATE_BINDING, Candidate
from p2psched.wire.messages import Withdraw, Withdrawn

S = TaskState


class Rebalancing(TaskMoves):
    def _rebalance(self, now: float) -> None:
        """Ask slow workers back for the tasks another would finish clearly sooner."""
        self._seek.clear()
        self._seeking = 0
        self._now = now
        if self.strategy.name == LATE_BINDING:
            return
        moves = 0
        self._granted = {}
        # No worker would have anything done sooner than this: where even that is not clearly
        # sooner than a queue's last task there, its tasks stay without a look at each
        # candidate (one pass over the candidates a sweep, not one per worker).
        self._soonest = min(map(self._done_by, self._cands.values()), default=math.inf)
        for w in list(self.workers.values()):
            waiting = [
                self.tasks[tid]
                for tid in w.holding
                if self.tasks[tid].state == S.SENT
                and self.tasks[tid].since + REBALANCE_AFTER_S <= now
                and not self.tasks[tid].moving
            ]
            if not waiting or w.link != UP:
                continue
            waiting.sort(key=lambda t: t.since)
            self._seeking += len(waiting)
            asking = self._movable(w, waiting, MAX_MOVES - moves)
            moves += len(asking)
            if asking:
                # Only if it has not started them: one that did runs on, so none runs twice.
                rid = next(self._rids)
                w.withdrawing[rid] = asking
                self.stats.negotiation["withdraw"] += 1
                self._out.append(Send(w.ad.node_id, Withdraw(rid, asking)))

    def _movable(self, w: WorkerState, waiting: list[TaskRun], most: int) -> list[str]:
        """Of the tasks `waiting` on `w` (oldest first), those that would be done clearly
        sooner elsewhere, latest sent first, at most `most`; each is marked moving."""
        slots = slots_of(w.ad.profile)
        t = waiting[-1]  # sent last: it waits longest there
        shape = shape_of(t.spec)
        self._seek.setdefault(shape, t.spec)
        asking: list[str] = []
        while waiting and len(asking) < most:
            # When the last waiting there would be done: its turn, then its run.
            there = (-(-len(waiting) // slots) + 1) * w.run_estimate
            if self._soonest > REBALANCE_GAIN * there:
                break
            sooner = partial(self._sooner, t, w.ad.node_id, there)
            to = self._chooser(shape, t.spec).pick(sooner)
            if to is None:
                break
            self._granted[to.worker] = self._granted.get(to.worker, 0) + 1
            waiting.pop()
            t.moving = True
            asking.append(t.spec.task_id)
            if waiting:
                t = waiting[-1]
                shape = shape_of(t.spec)
        return asking

    def _sooner(self, t: TaskRun, worker: bytes, there: float, c: Candidate) -> bool:
        """Whether `c` would have `t` done clearly sooner than `worker`, where it waits and
        would be done in `there` seconds; at a finite MTR, also for a better score."""
        if c.worker == worker or not self._fits(t, c) or self._granted.get(c.worker, 0) >= c.room:
            return False  # (no more moved its way than it has room for)
        done_by = self._done_by(c)
        if done_by > REBALANCE_GAIN * there:
            return False
        return math.isinf(self.mtr) or c.price + self.mtr * done_by <= t.price + self.mtr * there

    def _done_by(self, c: Candidate) -> float:
        """When a task moved to `c` would be done there. Its quote may predate tasks of ours
        placed there since: count those we know of, so that tasks never move back and forth
        between two equals."""
        ours = len(self.workers[c.worker].holding)
        return max(c.time, (-(-(ours + 1) // c.slots)) * c.run + c.wait)

    def _on_withdrawn(self, w: WorkerState, m: Withdrawn, now: float) -> None:
        """The tasks it gave back (those it had not started) go back to the queue, no try
        counted; the others it asked for run on there."""
        asked = w.withdrawing.pop(m.rid, [])
        given = set(m.tasks)
        for tid in asked:
            moved = self.tasks[tid]
            moved.moving = False
            if tid in given and moved.worker == w.ad.node_id and moved.state == S.SENT:
                reason = "moved to a worker that would finish it sooner"
                self._back(moved, reason, now, count=False)
