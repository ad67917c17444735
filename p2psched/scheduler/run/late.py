"""Late binding (Sparrow's batch sampling): instead of committing tasks to a worker's queue,
reserve places in the queues of workers picked at random, and bind a task to a place only
when that worker has a slot free for it (`ready`).

Promises: at most `PROBE_RATIO` places per queued task and `MAX_PROBES` in all, and per
worker no more than its slots; a place that comes up when nothing may go there is given up.
"""

from __future__ import annotations

from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.queue import Entry
from p2psched.scheduler.run.actions import Send
from p2psched.scheduler.run.config import (
    DECLINE_BACKOFF_S,
    MAX_BUSY_REJECTS,
    MAX_PROBES,
    MAX_REJECTS,
    MAX_SCAN,
)
from p2psched.scheduler.run.links import DOWN, NONE, UP
from p2psched.scheduler.run.negotiation import Negotiation
from p2psched.scheduler.run.tasks import TaskRun, gpus_of, slots_of
from p2psched.scheduler.run.workers import WorkerState
from p2psched.scheduler.strategy import PROBE_RATIO
from p2psched.wire.deal import MAX_RESERVED
from p2psched.wire.messages import Ready, Reserve, Unreserve

S = TaskState


class LateBinding(Negotiation):
    def _reserve(self, now: float) -> None:
        """Sparrow's batch sampling: keep PROBE_RATIO places reserved per queued task, in the
        queues of workers picked at random among those that could take them."""
        want = min(PROBE_RATIO * self._queued, MAX_PROBES) - self._reserved
        if want <= 0:
            return
        specs = [self._shape_spec[shape] for shape, n in self._shapes.items() if n > 0]
        picks: list[tuple[WorkerState, TaskSpec]] = []
        for w in self.workers.values():
            if w.link == DOWN or now < w.ask_after or w.declined is not None:
                continue
            if w.rejects >= MAX_REJECTS or w.busy_rejects >= MAX_BUSY_REJECTS:
                continue
            price = w.ad.profile.min_price
            if not self.money.affordable(price):
                continue  # nothing it could be given now: a place there would come back empty
            spec = next(
                (s for s in specs if s.need.matches(w.ad.profile) and price <= s.max_price), None
            )
            if spec is None:
                continue
            if w.link == NONE:
                self._dial(w)
            elif w.link == UP:
                picks.append((w, spec))
        self.strategy.rng.shuffle(picks)
        for w, spec in picks:
            # A place per slot, over as many workers as it takes: the point is to find the
            # ones that free up first, not to queue deep anywhere.
            room = min(MAX_RESERVED, slots_of(w.ad.profile))
            n = min(want, room - sum(w.reserved.values()))
            if n <= 0:
                continue
            rid = next(self._rids)
            w.reserved[rid] = n
            self._reserved += n
            self.stats.negotiation["reserve"] += 1
            want -= n
            self._out.append(Send(w.ad.node_id, self._ask(Reserve, rid, n, spec)))
            if want <= 0:
                break

    def _on_ready(self, w: WorkerState, m: Ready, now: float) -> None:
        """A worker has a slot for one of our places: the task that is due first and that it
        can take, of the GPUs the places were for, goes there now at the price the worker
        says (within the task's limit and the budget); if there is none, the places are
        given up."""
        rid = m.rid
        left = w.reserved.get(rid, 0)
        if left:
            self._reserved -= 1
            if left > 1:
                w.reserved[rid] = left - 1
            else:
                del w.reserved[rid]
        t = self._due_for(w, m.price, m.gpus) if left else None
        if t is None:
            self._reserved -= w.reserved.pop(rid, 0)
            self._out.append(Send(w.ad.node_id, Unreserve(rid)))
            # Nothing queued may go there now (tasks that failed there, or the budget):
            # places there again at once would come back just as empty.
            w.ask_after = now + DECLINE_BACKOFF_S
            return
        self._assign(t, w, m.price, now)
        self._commit(w, [t], self._commitment(w, [t], m.price, now).signed(self.identity), now)

    def _due_for(self, w: WorkerState, price: float, gpus: int) -> TaskRun | None:
        """The queued task due first that `w` may take at `price`, needing `gpus` GPUs
        (taken off the queue), or None."""
        queue, found = self._queue, None
        aside: list[Entry] = []
        while queue and len(aside) < MAX_SCAN:
            t = self.tasks[queue.head()[3]]
            if t.state != S.QUEUED:
                queue.pop()
                continue
            if (
                self._eligible(t, w)
                and gpus_of(t.spec) == gpus
                and price <= t.spec.max_price
                and self.money.affordable(price)
            ):
                queue.pop()
                found = t
                break
            aside.append(queue.pop())
        queue.put_back(aside)
        return found

    def _unreserve_all(self) -> None:
        for w in self.workers.values():
            for rid in w.reserved:
                self._out.append(Send(w.ad.node_id, Unreserve(rid)))
            w.reserved.clear()
        self._reserved = 0
