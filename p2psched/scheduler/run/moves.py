"""How a job's tasks move: into the queue and out of it, onto workers and back, to a final
state; the timers of the tasks on workers; a worker lost or banned; tasks no worker can take.

Promises: every move goes through `lifecycle` and, when the run is durable, is journaled with
its own reason (a task's history says why each move happened, not only why it last failed); a
task put back after a worker failed it excludes that worker and counts a try, until its
retries are spent; money held for a task is given back when it leaves its worker.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable

from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.queue import latest_start
from p2psched.scheduler.run.actions import Close, Send, Settled
from p2psched.scheduler.run.candidates import Candidates
from p2psched.scheduler.run.config import QUEUE_ALLOWANCE
from p2psched.scheduler.run.links import DOWN, UP
from p2psched.scheduler.run.tasks import Shape, TaskRun, shape_of, worker_name
from p2psched.scheduler.run.workers import WorkerState
from p2psched.store.journal import Moved
from p2psched.wire.messages import Cancel

S = TaskState
IN_FLIGHT = (S.SCHEDULED, S.SENT, S.RUNNING)


class TaskMoves(Candidates):
    def _move(self, t: TaskRun, new: TaskState, now: float, why: str) -> None:
        """`t` goes to `new` at `now`; `why` is this move's reason, as its history shows it."""
        queued_since = t.since
        old, t.state, t.since = t.state, t.state.to(new), now
        if new.final:
            self.stats.outcomes[new.value] += 1
        elif old == S.QUEUED and new == S.NEGOTIATING:
            self.stats.queue_wait.observe(now - queued_since)
        if self.durable and not self.paid_only:
            self.journal.append(
                Moved(
                    t.spec.task_id,
                    self.job,
                    old.value,
                    new.value,
                    now,
                    why,
                    t.worker,
                    t.price if t.worker is not None else 0.0,
                    t.attempts,
                    t.error,
                )
            )
        self._final += new.final
        if (new == S.QUEUED) != (old == S.QUEUED):
            shape = shape_of(t.spec)
            self._queued += 1 if new == S.QUEUED else -1
            self._shapes[shape] += 1 if new == S.QUEUED else -1
            self._shape_spec.setdefault(shape, t.spec)
            if t.input_bytes > self._shape_input.get(shape, 0):
                self._shape_input[shape] = t.input_bytes
        if new == S.SENT:
            self._sent(t, now)
        elif new == S.RUNNING:
            t.running_at = now
            self._timer(t, now + t.spec.timeout_s + self.config.timeout_grace_s)
        else:
            t.deadline = math.inf

    def _sent(self, t: TaskRun, now: float) -> None:
        """`t` is on a worker from `now`: it may wait in that worker's short queue before it
        starts, so it gets QUEUE_ALLOWANCE timeouts to be seen running."""
        t.sent_at = now
        t.running_at = math.nan
        t.partials = None
        self._timer(t, now + t.spec.timeout_s * QUEUE_ALLOWANCE + self.config.timeout_grace_s)

    def _timer(self, t: TaskRun, deadline: float) -> None:
        t.deadline = deadline
        heapq.heappush(self._timers, (deadline, t.spec.task_id))

    def _next_timer(self) -> float:
        """When the first task on a worker runs out of time (inf: none)."""
        while self._timers and self.tasks[self._timers[0][1]].deadline != self._timers[0][0]:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else math.inf

    def _expire(self, now: float) -> None:
        """Tasks on workers past their time: stopped there, and put back or timed out."""
        while self._timers and self._timers[0][0] <= now:
            deadline, tid = heapq.heappop(self._timers)
            t = self.tasks[tid]
            if t.deadline != deadline:
                continue
            if t.state in (S.SENT, S.RUNNING):
                self._stop_on_workers([t])
                reason = f"timed out after {t.spec.timeout_s:g} s"
                self._back(t, reason, now, final=S.TIMED_OUT, stalled=True)

    def _enqueue(self, t: TaskRun, now: float, why: str) -> None:
        self._move(t, S.QUEUED, now, why)
        if not t.retry:  # a retry keeps its place in time: it is served first anyway
            t.due = latest_start(now, t.spec.priority, t.spec.index, deadline=self.deadline)
        self._queue.push(t.spec.task_id, t.due, t.spec.index, retry=t.retry)

    def _load(self, t: TaskRun, state: TaskState, since: float) -> None:
        """Put a queued task in `state` as restored (its queue entry goes stale)."""
        assert t.state == S.QUEUED
        self._queued -= 1
        self._shapes[shape_of(t.spec)] -= 1
        t.state, t.since = state, since
        self._final += state.final

    def _release(self, t: TaskRun) -> None:
        t.moving = False
        if t.worker is not None:
            self.money.release(t.price)
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
                t.failed_by_worker(reason)
                self.views.failed(worker, t.spec.task_id, reason, now=now, stalled=stalled)
                self._floors.clear()
        failed_it = f"{worker_name(worker)} failed it" if count and worker is not None else None
        if t.attempts > t.spec.retries:
            t.error = t.why_workers_failed if count and worker is not None else reason
            last = f"the last of {t.attempts} tries" if t.attempts > 1 else "its only try"
            why = f"{failed_it}, {last}: {reason}" if failed_it else f"{reason} ({last})"
            self._move(t, final, now, why)
            self._out.append(Settled(t.spec.task_id))
            return
        t.retry = True
        self.stats.outcomes["retried"] += 1
        if failed_it:
            why = f"put back after {failed_it}: {reason}"
        elif worker is not None:
            why = f"put back from {worker_name(worker)}: {reason}"
        else:
            why = f"put back: {reason}"
        self._enqueue(t, now, why)

    def _lose(self, w: WorkerState, reason: str, now: float, *, stalled: bool = True) -> None:
        w.pending.clear()
        for tid in list(w.holding):
            t = self.tasks[tid]
            ran = t.state in (S.SENT, S.RUNNING) and tid not in w.restored
            self._back(t, reason, now, count=ran, stalled=stalled)
        w.holding.clear()

    def _ban(self, w: WorkerState, reason: str, now: float) -> None:
        """A worker that broke the protocol: drop it for this job, replay its tasks elsewhere."""
        self._out.append(Close(w.ad.node_id, reason))
        w.relink(DOWN)
        w.rid, w.quote, w.room, w.declined = None, None, 0, reason
        w.banned = True
        self._floors.clear()
        self._changed(w, now)
        self._forget_reservations(w)
        for tid in w.holding:
            self.tasks[tid].excluded.add(w.ad.node_id)
        self._lose(w, f"worker dropped: {reason}", now, stalled=False)

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
            why = reason if t.worker is None else f"{reason} (it was on {worker_name(t.worker)})"
            self._move(t, on_worker if t.state in (S.SENT, S.RUNNING) else elsewhere, now, why)
            self._out.append(Settled(t.spec.task_id))
        return [t.spec.task_id for t in ending]

    def _stop_on_workers(self, tasks: Iterable[TaskRun]) -> None:
        """Tell the workers holding these tasks to stop them (those we still talk to)."""
        by_worker: dict[bytes, list[str]] = {}
        for t in tasks:
            if t.worker is not None and self.workers[t.worker].link == UP:
                by_worker.setdefault(t.worker, []).append(t.spec.task_id)
        for worker, ids in by_worker.items():
            self._out.append(Send(worker, Cancel(ids)))

    def _strand(self, now: float) -> None:
        """Tasks no known worker can take: look for more workers, and fail them in the end."""
        stranded = []
        # Tasks of one shape share their candidates but for the workers each excludes: one
        # pass over the workers per shape, not per task.
        by_shape: dict[Shape, list[bytes]] = {}
        for tid in set(self._queue.task_ids()):  # a task re-queued may have a stale entry too
            t = self.tasks[tid]
            if t.state != S.QUEUED:
                continue
            shape = shape_of(t.spec)
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
            if t.stranded_since + self.config.no_worker_s <= now:
                t.error = self._why_no_worker(t, now)
                self._move(t, S.FAILED, now, t.error)
                self._out.append(Settled(t.spec.task_id))

    def _why_no_worker(self, t: TaskRun, now: float) -> str:
        cheapest = min((w.ad.profile.min_price for w in self.workers.values()), default=0.0)
        if not self.money.affordable(cheapest):
            return f"the job's budget is spent ({self.spent:g} paid, {self.held:g} committed)"
        if t.spec.need in self.unmatched:
            return f"no worker found that meets {t.spec.need}: {self.unmatched[t.spec.need]}"
        if not self.workers:
            return f"no worker found that meets {t.spec.need}"
        skipped = "skipped for now: it kept failing or stalling"
        # (those that failed it are told of by their own reason, below)
        reasons = Counter(
            w.declined
            or self.views.barred(w.ad.node_id, now)
            or (skipped if self.views.skipped(w.ad.node_id, now) else None)
            or "unreachable"
            for w in self.workers.values()
            if t.spec.need.matches(w.ad.profile) and w.ad.node_id not in t.excluded
        )
        summary = "; ".join(f"{r} ({n})" for r, n in reasons.most_common(3))
        if t.why_workers_failed is not None:
            others = f"no other worker would take it: {summary}" if reasons else "no other worker"
            return f"{t.why_workers_failed}; {others}"
        tried = len(t.excluded)
        if not reasons and not tried:
            return f"none of the {len(self.workers)} workers found meets {t.spec.need}"
        return f"no worker would take it after {tried} tried: {summary or 'none left'}"
