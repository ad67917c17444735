"""Verified results (a job's `verify:`): a task runs in copies on different workers, their
results are compared, and one is kept once enough agree; the others are disputed, not paid.

Owns: each task's group (`agreement.Group`): the task itself is its first copy, "<task id>~2",
"<task id>~3", ... the others, tasks of the run like any other (queued, committed, retried);
which copies' results agree, by the job's `compare`; the group's verdict and its money; and,
when the job samples, which results get a check (`agreement.sample_rate`, by the worker's
record). Also the gate for a job that has workers prove their capacity first (`Challenge`).
Promises: a result waiting for its copies is `verifying`, its money held, not paid; once
`quorum` results agree the first of them is kept and they are paid and completed, the others
disputed (recorded, never paid, their workers' records marked) and copies still under way
cancelled; a group whose copies cannot reach a quorum gets another copy while it has copies
left (the replicas, or two for a sampled task, and the job's retries), and else fails, paying
none; a compare command is asked one pair at a time; the shell is told a task settled
(`Settled`) once, when its group is decided, never for each copy.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run.actions import Challenge, Compare, Settled
from p2psched.scheduler.run.agreement import (
    Group,
    copy_id,
    copy_of,
    json_agree,
    sample_rate,
)
from p2psched.scheduler.run.candidates import marks_of
from p2psched.scheduler.run.reports import Reports
from p2psched.scheduler.run.tasks import Spooled, TaskRun, worker_name
from p2psched.scheduler.run.workers import WorkerState
from p2psched.store.journal import Judged
from p2psched.wire.deal import Receipt

S = TaskState
CHALLENGE_AGAIN_S = 60.0  # a worker's capacity still unknown (it refused): asked again then
# What an undecided group shows as its state: its copy furthest along.
_FURTHEST = (S.RUNNING, S.SENT, S.SCHEDULED, S.NEGOTIATING, S.QUEUED, S.UNSCHEDULED)


class Verification(Reports):
    # -- groups ---------------------------------------------------------------------------

    def _open_groups(self, task_ids: list[str], now: float) -> None:
        """Each of these tasks a group of its own; with replicas, its other copies queued at
        once."""
        v = self.verify
        need = v.quorum if v.replicas > 1 else 1
        for tid in task_ids:
            t = self.tasks[tid]
            g = self.groups[tid] = Group(tid, need, max(v.replicas, 2) + t.spec.retries)
            g.copies.append(tid)
            g.checked = v.replicas > 1
            self._group_of[tid] = tid
            for _ in range(v.replicas - 1):
                why = f"a copy of {tid}: {v.replicas} run it, {need} must agree"
                self._spawn(g, now, why, urgent=False)

    def _spawn(self, g: Group, now: float, why: str, *, urgent: bool = True) -> TaskRun:
        """One more copy of `g`'s task, kept away from the workers, operators and networks
        its other copies went to. `urgent`: a result waits for it, so it goes to the head of
        the queue; else (a replica made with its task) it sits next to its task, so that
        the copies of one task run together and its verdict comes early."""
        first = self.tasks[g.base]
        k = len(g.copies) + 1
        # (named as its id is: "<the task's name>~k")
        spec = replace(first.spec, task_id=copy_id(g.base, k), name=copy_id(first.spec.name, k))
        run = self.tasks[spec.task_id] = TaskRun(spec, input_bytes=first.input_bytes)
        g.copies.append(spec.task_id)
        self._group_of[spec.task_id] = g.base
        for tid in g.copies[:-1]:
            went = self.tasks[tid].placed_on
            if went is not None:
                run.excluded.add(went)
                if went in self.workers:
                    run.apart = (run.apart or set()) | marks_of(self.workers[went])
        run.retry = urgent
        run.due = first.due
        self._enqueue(run, now, why)
        return run

    def _copies_of(self, task_id: str) -> list[str]:
        g = self.groups.get(task_id)
        return [task_id] if g is None else g.copies

    def settled(self) -> list[str]:
        """Its tasks that settled, in the order they did (a task run in copies once its group
        was decided, by its last copy's end)."""
        if not self.groups:
            done = [t for t in self.tasks.values() if t.state.final]
            return [t.spec.task_id for t in sorted(done, key=lambda t: t.since)]
        ended = {
            b: max(self.tasks[c].since for c in g.copies)
            for b, g in self.groups.items()
            if g.decided
        }
        return sorted(ended, key=ended.__getitem__)

    def kept(self, task_id: str) -> TaskRun | None:
        """The copy whose result the job keeps for task `task_id` (the task itself, in a job
        that verifies nothing, once completed); None while none is, or if none will be."""
        g = self.groups.get(task_id)
        if g is None:
            t = self.tasks.get(task_id)
            return t if t is not None and t.state == S.COMPLETED else None
        return self.tasks[g.kept] if g.kept is not None else None

    def group_state(self, task_id: str) -> TaskState:
        """Where task `task_id` stands, its copies taken together: completed once a result is
        kept, final as its first copy ended when the group failed, else its copy furthest
        along (verifying when all that are left wait for a verdict)."""
        g = self.groups.get(task_id)
        t = self.tasks[task_id]
        if g is None:
            return t.state
        if g.kept is not None:
            return S.COMPLETED
        if g.decided:
            return t.state if t.state.final and t.state != S.DISPUTED else S.FAILED
        states = {self.tasks[c].state for c in g.copies}
        return next((s for s in _FURTHEST if s in states), S.VERIFYING)

    def verification_report(self) -> dict[str, Any] | None:
        """What verifying cost the job: copies run beyond one per task, disputed results, what
        was paid for the extra copies, and groups with no quorum. None if it verifies nothing."""
        if not self.verify.copies:
            return None
        extra = [t for tid, t in self.tasks.items() if tid not in self.groups]
        ended = Counter(t.state.value for t in extra)
        paid_extra = 0.0
        for g in self.groups.values():
            paid = [c for c in g.copies if self.tasks[c].state == S.COMPLETED]
            paid_extra += sum(self.tasks[c].price for c in paid[1:])
        return {
            "copies": len(extra),
            "checked": sum(g.checked for g in self.groups.values()),
            "disputed": sum(t.state == S.DISPUTED for t in self.tasks.values()),
            "no_quorum": sum(g.no_quorum for g in self.groups.values()),
            "extra_paid": paid_extra,
            "copies_by_state": dict(ended),
        }

    # -- results --------------------------------------------------------------------------

    def _accept(self, w: WorkerState, t: TaskRun, packed: bytes, run: float, now: float) -> None:
        g = self.groups.get(self._group_of.get(t.spec.task_id, ""))
        if g is None:
            super()._accept(w, t, packed, run, now)
            return
        worker = w.ad.node_id
        if g.need == 1 and len(g.copies) == 1:  # a sampled task's first result
            record = self.views.clean(worker), self.views.disputes(worker)
            if self._rng.random() >= sample_rate(self.verify.sample, *record):
                g.decided, g.kept = True, t.spec.task_id
                self._announced.add(g.base)
                super()._accept(w, t, packed, run, now)
                return
            g.need, g.checked = 2, True
            self._spawn(g, now, f"a check of {worker_name(worker)}'s result: another runs it")
        assert t.receipt is not None
        self._charge(w, t.receipt, packed, now, pending=True)
        t.price = t.receipt.price
        self.money.hold(
            t.price, awaiting=True
        )  # (`_release` gave back what was held at its commitment)
        t.worker = None  # its worker holds it no longer; its receipt names who ran it
        ran = f"{worker_name(worker)} ran it in {run:.3g} s"
        why = f"{ran}; its receipt verified; held until {g.need} results agree"
        self._move(t, S.VERIFYING, now, why)
        g.unplaced.append(t.spec.task_id)
        self._judge(g, now)

    def _late(
        self, w: WorkerState, t: TaskRun, r: Receipt, packed: bytes, output: Any, now: float
    ) -> None:
        """A copy's result that came after it was stopped (not needed, or cancelled): it was
        not judged with its group, so it is paid only if it agrees with the result kept (by
        the hashes or the job's rules; a compare command is not asked); one that disagrees
        with it is disputed, and one with none kept to agree with is unsettled."""
        g = self.groups.get(self._group_of.get(t.spec.task_id, ""))
        if g is None:
            super()._late(w, t, r, packed, output, now)
            return
        t.receipt, t.output = r, output
        same = None if g.kept is None else self._same(g.kept, t.spec.task_id)
        if same:
            self._charge(w, r, packed, now)
            return
        self._charge(w, r, packed, now, pending=True)
        if same is None:
            self._judged(t, "unsettled", now)
            return
        reason = f"its result, late, disagreed with the one kept ({g.kept})"
        self._judged(t, "disputed", now)
        self.views.disputed(r.worker, t.spec.task_id, reason, now=now)

    def compared(self, a: str, b: str, same: bool | None, now: float, error: str = "") -> None:
        """The job's compare command judged the results of copies `a` and `b` (`same`), or
        could not (None; `error` says why: the task fails, its workers not blamed)."""
        g = self.groups.get(self._group_of.get(b, ""))
        if g is None or g.decided or not g.asking or not g.unplaced:
            return
        if (g.clusters[g.probe][0], g.unplaced[0]) != (a, b):
            return
        g.asking = False
        if same is None:
            self._fail_group(g, f"the job's compare command failed: {error}", now)
        elif same:
            g.clusters[g.probe].append(g.unplaced.pop(0))
            g.probe = 0
        else:
            g.probe += 1
        self._judge(g, now)
        self._pump(now)

    def _judge(self, g: Group, now: float) -> None:
        """Place what came in; keep a result once enough agree; else run another copy if
        one could still make a quorum, or fail the task if none can."""
        if g.decided or not self._place(g):
            return
        best = max(g.clusters, key=len, default=[])
        if len(best) >= g.need:
            self._decide(g, best, now)
            return
        under_way = [c for c in g.copies if not self.tasks[c].state.final]
        under_way = [c for c in under_way if self.tasks[c].state != S.VERIFYING]
        missing = g.need - len(best) - len(under_way)
        if missing <= 0:
            return
        if g.need == 1:  # a task not checked whose one try failed: it failed, as unverified
            self._announce(g)
            return
        if self._no_checker(g):
            # A sampled result whose check found no worker to run it at all (none other
            # could take it): it stands unchecked, as one not sampled does.
            self._decide(g, best, now, checked=False)
            return
        if len(g.copies) + missing > g.max_copies:
            n = sum(len(c) for c in g.clusters)
            ended = [self.tasks[c] for c in g.copies if self.tasks[c].state != S.VERIFYING]
            why = max(ended, key=lambda t: t.since).error if n < g.need and ended else None
            g.no_quorum = True
            self._fail_group(
                g,
                f"no {g.need} of its results agreed: {n} results, at most {len(best)} alike, "
                f"after {len(g.copies)} copies" + (f" (the last failed: {why})" if why else ""),
                now,
            )
            return
        for _ in range(missing):
            self._spawn(g, now, f"another copy of {g.base}: its results disagree so far")

    def _place(self, g: Group) -> bool:
        """Put each new result with those it agrees with; False while a compare command's
        answer is awaited."""
        while g.unplaced:
            if g.asking:
                return False
            new = g.unplaced[0]
            if g.probe == len(g.clusters):
                g.clusters.append([g.unplaced.pop(0)])
                g.probe = 0
                continue
            same = self._same(g.clusters[g.probe][0], new)
            if same is None:
                g.asking = True
                self._out.append(Compare(g.clusters[g.probe][0], new, self.verify.command))
                return False
            if same:
                g.clusters[g.probe].append(g.unplaced.pop(0))
                g.probe = 0
            else:
                g.probe += 1
        return True

    def _same(self, a: str, b: str) -> bool | None:
        """Whether the results of copies `a` and `b` agree; None: ask the compare command."""
        x, y = self.tasks[a], self.tasks[b]
        assert x.receipt is not None and y.receipt is not None
        if x.receipt.result_hash == y.receipt.result_hash:
            return True  # the same bytes agree by any rule
        v = self.verify
        if v.compare == "exact":
            return False
        if v.compare == "json":
            if x.output is Spooled.IN_STORE or y.output is Spooled.IN_STORE:
                return None  # too large to hold here: the shell compares them from the store
            return json_agree(x.output, y.output, v.tolerance)
        return None

    def _no_checker(self, g: Group) -> bool:
        """A sampled task with one result (or only results that agree) whose latest check
        copy ended without a worker ever failing it: no other worker could take it."""
        if self.verify.sample <= 0 or len(g.clusters) != 1:
            return False
        ended = [self.tasks[c] for c in g.copies if self.tasks[c].state.final]
        return bool(ended) and max(ended, key=lambda t: t.since).last_failure is None

    def _decide(self, g: Group, agreed: list[str], now: float, *, checked: bool = True) -> None:
        """Keep the first of the results that agree: pay those, dispute the rest, cancel the
        copies still under way (`checked`: they agreed with another worker's, which counts
        in their workers' records; else a result kept unchecked)."""
        g.decided, g.kept, g.checked = True, agreed[0], g.checked and checked
        n = len(agreed)
        for tid in g.copies:
            t = self.tasks[tid]
            if t.state != S.VERIFYING:
                continue
            assert t.receipt is not None
            worker = t.receipt.worker
            self.money.release(t.price, awaiting=True)
            if tid in agreed:
                self.money.pay(t.price)
                self._judged(t, "agreed", now)
                if checked:
                    self.views.verified(worker, tid, now=now)
                kept = "kept" if tid == g.kept else f"agrees with {g.kept}, kept"
                why = f"{n} results agree ({kept})" if checked else "no other worker could check it"
                self._move(t, S.COMPLETED, now, f"{why}; {t.price:g} paid")
            else:
                reason = f"its result disagreed with the {n} that agree ({g.kept} kept)"
                t.error = reason
                self._judged(t, "disputed", now)
                self.views.disputed(worker, tid, reason, now=now)
                if self.views.skipped(worker, now):  # past the operator's threshold: now
                    self._uncandidate(worker)
                    self._floors.clear()
                self._move(t, S.DISPUTED, now, f"{reason}: not paid")
        live = [self.tasks[c] for c in g.copies if not self.tasks[c].state.final]
        self._end(live, f"not needed: {n} results agree", S.ABORTED, S.ABORTED, now)
        self._announce(g)

    def _fail_group(self, g: Group, reason: str, now: float) -> None:
        """No quorum: none of its results is kept nor paid; copies under way are stopped."""
        g.decided = True
        for tid in g.copies:
            t = self.tasks[tid]
            if t.state == S.VERIFYING:
                self.money.release(t.price, awaiting=True)
                t.error = reason
                self._judged(t, "unsettled", now)
                self._move(t, S.FAILED, now, f"{reason}: not paid")
        live = [self.tasks[c] for c in g.copies if not self.tasks[c].state.final]
        self._end(live, reason, S.FAILED, S.FAILED, now)
        first = self.tasks[g.base]
        first.error = first.error or reason
        self._announce(g)

    def _judged(self, t: TaskRun, verdict: str, now: float) -> None:
        if self.durable:
            self.journal.append(Judged(self.job, t.spec.task_id, verdict, now))

    def _announce(self, g: Group) -> None:
        g.decided = True
        self._announced.add(g.base)
        self._out.append(Settled(g.base))

    def _move(self, t: TaskRun, new: TaskState, now: float, why: str) -> None:
        super()._move(t, new, now, why)
        if not new.final or not self.groups:
            return
        g = self.groups.get(self._group_of.get(t.spec.task_id, ""))
        if g is None or g.decided:
            return
        if new in (S.FAILED, S.TIMED_OUT) and not self._ending:
            self._judge(g, now)  # a copy that ended without a result: another may be needed
        if not g.decided and all(self.tasks[c].state.final for c in g.copies):
            self._announce(g)  # ended all (cancelled, the job's deadline, abandoned)

    def _end(
        self,
        tasks: Iterable[TaskRun],
        reason: str,
        on_worker: TaskState,
        elsewhere: TaskState,
        now: float,
    ) -> list[str]:
        """As for any task; a copy waiting for its verdict is not paid (it is on record as
        unsettled), and none of the copies ended asks for another."""
        ending = list(tasks)
        for t in ending:
            if t.state == S.VERIFYING:
                self.money.release(t.price, awaiting=True)
                self._judged(t, "unsettled", now)
        self._ending = True
        try:
            return super()._end(ending, reason, on_worker, elsewhere, now)
        finally:
            self._ending = False

    # -- after a restart --------------------------------------------------------------------

    def _restore_copies(self, stored: Mapping[str, Any], now: float) -> None:
        """The copies the store has of each task, made again (queued, as new: the restore
        then loads what each had become)."""
        wanted: dict[str, int] = {}
        for tid in stored:
            if (copy := copy_of(tid)) is not None and copy[0] in self.groups:
                wanted[copy[0]] = max(wanted.get(copy[0], 0), copy[1])
        for base, last in wanted.items():
            g = self.groups[base]
            while len(g.copies) < last:
                self._spawn(g, now, "a copy it had before its scheduler restarted")

    def _restore_verdicts(self, now: float) -> None:
        """Each group as its copies were left: decided if one was kept, else its results
        waiting for a verdict judged again (a sampled task with a second copy was checked);
        its copies kept apart again from the workers the others went to (those known yet by
        their ads, from their operators and networks too)."""
        for g in self.groups.values():
            for tid in g.copies:
                went = self.tasks[tid].placed_on
                if went is None:
                    continue
                marks = marks_of(self.workers[went]) if went in self.workers else set()
                for other in (self.tasks[c] for c in g.copies if c != tid):
                    other.excluded.add(went)
                    if marks:
                        other.apart = (other.apart or set()) | marks
            states = [self.tasks[c].state for c in g.copies]
            if S.COMPLETED in states:
                g.decided, g.kept = True, g.copies[states.index(S.COMPLETED)]
                for c in g.copies:  # a result that came after its copy was stopped (`_late`)
                    t = self.tasks[c]
                    if t.state == S.ABORTED and t.receipt is not None and self._same(g.kept, c):
                        self.money.pay(t.receipt.price)
                continue
            if self.verify.sample > 0 and len(g.copies) > 1:
                g.need, g.checked = 2, True
            g.unplaced = [c for c, s in zip(g.copies, states, strict=True) if s == S.VERIFYING]
            if g.unplaced:
                self._judge(g, now)
            elif all(s.final for s in states):
                g.decided = True

    # -- capacity ---------------------------------------------------------------------------

    def _challenge_if_needed(self, w: WorkerState, now: float) -> None:
        """A worker linked (or, refused before, CHALLENGE_AGAIN_S later): if the job has
        workers prove their capacity and this one's is not on record, ask the shell to
        challenge it (the record is the node's: one challenge serves every job). A worker
        that was busy, or had answered another scheduler's challenge just before, refuses
        without a verdict: it is asked again later, and gets no task meanwhile."""
        if not self.verify.challenge or self.views.capacity(w.ad.node_id) != "unknown":
            return
        if now >= self._challenged_at.get(w.ad.node_id, -math.inf) + CHALLENGE_AGAIN_S:
            self._challenged_at[w.ad.node_id] = now
            self._out.append(Challenge(w.ad.node_id))

    def challenged(self, worker: bytes, now: float) -> None:
        """`worker`'s capacity challenge ended; its outcome is in the node's record."""
        w = self.workers.get(worker)
        if w is None:
            return
        self._floors.clear()
        self._changed(w, now)
        self._pump(now)
