"""What workers report about the tasks they hold: heartbeats (which run, how far along, and,
after a restart or a regain, which they dropped), partial results (a streamed answer's chunks)
and results with their receipts.

Promises: a partial result is passed on only from the worker that holds its task, while the
task is sent or running there, within the task's caps per try (`max_partials`,
`max_partial_bytes`, `max_partial_items`, and the codec's `MAX_CONTAINERS` for all its parts
decoded), and only if JSON can hold it (and, from the http driver, a model server's event:
a JSON object that is not an error, no top-level "error" key); one that is not fails the
task there (a try counted, the worker told to stop it). (One whose part is not MessagePack
breaks its frame: the link drops, as for any malformed message.) One for a task the worker
does not hold is dropped. A task completes once, only with a result whose receipt passes
`check_receipt` and, once parts of it were passed on, whose output is the list of those
parts, one after the other (else the task fails there, unpaid: whoever watched was shown
what its receipt does not cover); it is then paid and acknowledged; a result that fails the
check drops the worker; a repeated result of a completed task is acknowledged again, and
changes nothing; an output over `spool_result_bytes` is not kept in memory by a durable run
(its store keeps it).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run.actions import Send, Settled, Streamed
from p2psched.scheduler.run.config import BEAT_S, DURATION_SLACK_S, MAX_RTT_S
from p2psched.scheduler.run.moves import TaskMoves
from p2psched.scheduler.run.receipts import check_receipt
from p2psched.scheduler.run.tasks import PassedOn, Spooled, TaskRun, model_of, worker_name
from p2psched.scheduler.run.workers import WorkerState
from p2psched.store.journal import Charged
from p2psched.wire.codec import MAX_CONTAINERS, Budget, DecodeError, OverBudget, array_items
from p2psched.wire.deal import MAX_RESULT_DEPTH, Receipt
from p2psched.wire.messages import Ack, Beat, Partial, Result, unpack

S = TaskState
_RESULT_IN = (S.COMPLETED, S.VERIFYING, S.DISPUTED)  # a result was taken: another changes nothing


class Reports(TaskMoves):
    def _on_beat(self, w: WorkerState, m: Beat, now: float) -> None:
        worker = w.ad.node_id
        if w.restored:
            # Its first heartbeat since we restarted: what it does not run, and did not
            # deliver just before, it dropped when we went away.
            gone = w.restored - set(m.running)
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
        for tid in m.running:
            t = self.tasks.get(tid)
            if t is not None and t.worker == worker and t.state == S.SENT:
                self._move(t, S.RUNNING, now, f"{worker_name(worker)} started it")
        for tid, p in zip(m.running, m.progress):
            if tid in self.tasks and self.tasks[tid].worker == worker:
                self.tasks[tid].progress = p

    def _on_partial(self, w: WorkerState, m: Partial, now: float) -> None:
        worker = w.ad.node_id
        t = self.tasks.get(m.task)
        if t is None or t.worker != worker or t.state not in (S.SENT, S.RUNNING):
            # Not its task (another worker's, whose watchers it would feed made-up parts), or
            # no longer: a part that crossed a cancel, say.
            self.stats.partials["refused"] += 1
            return
        c = self.config
        if t.partials is None:
            t.partials = PassedOn(Budget(MAX_CONTAINERS, c.max_partial_items))
        passed = t.partials
        passed.count += 1
        passed.size += len(m.output)
        problem = None
        if passed.count > c.max_partials:
            problem = f"it sent more than {c.max_partials} partial results for the task"
        elif passed.size > c.max_partial_bytes:
            problem = f"its partial results for the task came to over {c.max_partial_bytes} bytes"
        else:
            try:
                output = unpack(m.output, c.max_partial_bytes, passed.budget)
            except OverBudget as e:
                problem = f"its partial results for the task build {e}"
            except DecodeError as e:
                problem = f"it sent a partial result that is not valid MessagePack ({e})"
            else:
                problem = _chunk_problem(output, events=t.spec.driver == "http")
        if problem is not None:
            self.stats.partials["refused"] += 1
            self._stop_on_workers([t])
            self._back(t, problem, now)
            return
        passed.digest.update(m.output)
        self.stats.partials["passed"] += 1
        self._out.append(Streamed(t.spec.task_id, output))

    def _on_result(self, w: WorkerState, m: Result, now: float) -> None:
        worker = w.ad.node_id
        t = self.tasks.get(m.task)
        if t is None:
            return
        if t.state in _RESULT_IN:
            r = t.receipt
            if r is not None and (r.worker, r.sig) == (worker, m.receipt.sig):
                self._out.append(Send(worker, Ack([m.task])))  # it did not hear our ack
            return
        if t.worker != worker:
            return  # a late answer for a task since placed elsewhere
        # Cancelled while it ran there, and done before the cancel reached it: the signed
        # commitment stands, so a good receipt for it is paid, as the worker records it.
        late = t.state == S.ABORTED and t.receipt is None
        if t.state not in (S.SENT, S.RUNNING) and not late:
            return
        r = m.receipt
        assert w.public_key is not None
        problem, packed, output = check_receipt(
            m,
            w.public_key,
            (self.identity.node_id, self.job, t.spec.task_id),
            committed=t.price,
            max_bytes=self.config.max_result_bytes,
            roots=w.roots,
        )
        if problem is not None:
            self._ban(w, problem, now)
            return
        self._out.append(Send(worker, Ack([t.spec.task_id])))
        if m.error is not None:
            if not late:
                self._back(t, m.error, now)
            return
        if not late and (unlike := _unlike_parts(t.partials, packed)) is not None:
            # Its watchers were shown parts that its signed result does not hold: not a
            # result for them (nor paid). (An honest worker's parts lost on a broken link
            # end here too: they were not shown either.)
            self._back(t, unlike, now)
            return
        if late:
            self._late(w, t, r, packed, output, now)
            return
        run = self._measure(w, t, r, now)
        self._release(t)
        if self.durable and not self.paid_only and len(packed) > self.config.spool_result_bytes:
            output = Spooled.IN_STORE  # `_charge` hands it to the store
        t.output, t.receipt, t.error, t.progress = output, r, None, 1.0
        t.output_bytes = len(packed)
        self._accept(w, t, packed, run, now)

    def _measure(self, w: WorkerState, t: TaskRun, r: Receipt, now: float) -> float:
        """How long `t` ran on `w` as this scheduler measured it: from dispatch to result,
        less the channel's round trip and the time it was seen waiting in the worker's queue
        (from its heartbeat saying it started). The predictor and the worker's record learn
        this, not what the receipt claims; a claim far from it is noted in the record. (A
        task sent before this scheduler restarted was not measured: its claim is taken, for
        the record only.)"""
        if math.isnan(t.sent_at):
            self.views.succeeded(
                w.ad.node_id, model_of(t.spec), r.duration, t.spec.task_id, now=now
            )
            return r.duration
        # (at most MAX_RTT_S: a worker slow to answer quotes on purpose would look fast)
        rtt = min(w.rtt, MAX_RTT_S) if w.rtt < math.inf else 0.0
        total = max(0.0, now - t.sent_at - rtt)
        if math.isnan(t.running_at):  # it may have waited in its queue all along
            lo, hi = 0.0, total
        else:  # its beat said it started: at most a beat's interval after it did
            lo = min(total, max(0.0, now - t.running_at))
            hi = min(total, lo + BEAT_S)
        slack = DURATION_SLACK_S
        if not lo - slack <= r.duration <= hi + slack:
            self.views.duration_mismatch(
                w.ad.node_id, t.spec.task_id, r.duration, min(max(r.duration, lo), hi), now=now
            )
        run = min(max(r.duration, lo), hi)  # the claim, as far as the measure bears it out
        model = model_of(t.spec)
        self.predictor.observe(
            w.ad.node_id,
            model,
            t.input_bytes,
            wait_s=total - run,  # on its queue, as measured
            run_s=run,
            now=now,
            tokens=t.spec.tokens,
        )
        self.views.succeeded(w.ad.node_id, model, run, t.spec.task_id, now=now)
        return run

    def _late(
        self, w: WorkerState, t: TaskRun, r: Receipt, packed: bytes, output: Any, now: float
    ) -> None:
        """The result of `t`, cancelled while it ran, done before the cancel reached it: paid.
        (`Verification._late`: a copy's, only if it agrees with the result kept.)"""
        self._charge(w, r, packed, now)
        t.receipt = r

    def _accept(self, w: WorkerState, t: TaskRun, packed: bytes, run: float, now: float) -> None:
        """`t`'s result came with its receipt checked: it is done, and paid for. (A job that
        verifies results first compares it with its copies': `Verification._accept`.)"""
        assert t.receipt is not None
        r = t.receipt
        self._charge(w, r, packed, now)
        ran = f"{worker_name(w.ad.node_id)} ran it in {run:.3g} s"
        self._move(t, S.COMPLETED, now, f"{ran}; its receipt verified, {r.price:g} paid")
        self._out.append(Settled(t.spec.task_id))

    def _charge(
        self, w: WorkerState, r: Receipt, packed: bytes, now: float, *, pending: bool = False
    ) -> None:
        """Pay what `r` charges, and record it (with the result, as it came). `pending`: a
        result waiting for its copies' verdict: recorded, its money still held, not paid."""
        if not pending:
            self.money.pay(r.price)
        if self.durable:
            assert w.public_key is not None
            output = b"" if self.paid_only else packed  # (the receipt's hash still covers it)
            verdict = "pending" if pending else None
            self.journal.append(
                Charged(r, w.public_key, output, now, keep=not self.paid_only, verdict=verdict)
            )


def _unlike_parts(passed: PassedOn | None, packed: bytes) -> str | None:
    """Why a result (its MessagePack) is not the partial results passed on for its try, one
    after the other, or None (also when none were)."""
    if passed is None:
        return None
    items = array_items(packed)
    if items is None or items[0] != passed.count:
        return f"its result is not the {passed.count} partial results it sent"
    if hashlib.sha256(items[1]).digest() != passed.digest.digest():
        return "its result differs from the partial results it sent"
    return None


def _chunk_problem(part: Any, *, events: bool) -> str | None:
    """Why `part` cannot be passed on as a streamed answer's chunk, or None: it must hold only
    what JSON can; `events` (a model server's, through the http driver): a JSON object, and
    not an error (a task's failure is its signed result's to tell, not its watchers')."""
    if events and not isinstance(part, dict):
        return f"it sent a partial result that is not a map ({type(part).__name__})"
    if events and "error" in part:
        return "it sent a partial result that is an error (a failure comes as the result)"
    stack: list[tuple[Any, int]] = [(part, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_RESULT_DEPTH:
                return f"it sent a partial result nested deeper than {MAX_RESULT_DEPTH} levels"
            if isinstance(value, dict):
                if not all(isinstance(k, str) for k in value):
                    return "it sent a partial result with a map key that is not a string"
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, float) and not math.isfinite(value):
            return "it sent a partial result holding a number JSON cannot (NaN or infinity)"
        elif not isinstance(value, str | int | float | bool | None):
            return f"it sent a partial result holding what JSON cannot ({type(value).__name__})"
    return None
