"""What workers report about the tasks they hold: heartbeats (which run, how far along, and,
after a restart or a regain, which they dropped), partial results (a streamed answer's chunks)
and results with their receipts.

Promises: a partial result is passed on only from the worker that holds its task, while the
task is sent or running there, within the task's caps (`max_partials`, `max_partial_bytes`
per try); one over them, or not MessagePack, fails the task there (a try counted, the worker
told to stop it); one for a task the worker does not hold is dropped. A task completes once,
only with a result whose receipt passes `check_receipt`, and is then paid and acknowledged;
a result that fails the check drops the worker; a repeated result of a completed task is
acknowledged again, and changes nothing; an output over `spool_result_bytes` is not kept in
memory by a durable run (its store keeps it).
"""

from __future__ import annotations

from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run.actions import Send, Settled, Streamed
from p2psched.scheduler.run.moves import TaskMoves
from p2psched.scheduler.run.receipts import check_receipt
from p2psched.scheduler.run.tasks import Spooled, model_of, worker_name
from p2psched.scheduler.run.workers import WorkerState
from p2psched.store.journal import Charged
from p2psched.wire.codec import DecodeError
from p2psched.wire.deal import Receipt
from p2psched.wire.messages import Ack, Beat, Partial, Result, unpack

S = TaskState


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
        count, size = t.partials[0] + 1, t.partials[1] + len(m.output)
        t.partials = (count, size)
        c = self.config
        problem = None
        if count > c.max_partials:
            problem = f"it sent more than {c.max_partials} partial results for the task"
        elif size > c.max_partial_bytes:
            problem = f"its partial results for the task came to over {c.max_partial_bytes} bytes"
        else:
            try:
                output = unpack(m.output, c.max_partial_bytes)
            except DecodeError as e:
                problem = f"it sent a partial result that is not valid MessagePack ({e})"
        if problem is not None:
            self.stats.partials["refused"] += 1
            self._stop_on_workers([t])
            self._back(t, problem, now)
            return
        self.stats.partials["passed"] += 1
        self._out.append(Streamed(t.spec.task_id, output))

    def _on_result(self, w: WorkerState, m: Result, now: float) -> None:
        worker = w.ad.node_id
        t = self.tasks.get(m.task)
        if t is None or t.worker != worker:
            return  # a late answer for a task since placed elsewhere
        if t.state == S.COMPLETED:
            if t.receipt is not None and m.receipt.sig == t.receipt.sig:
                self._out.append(Send(worker, Ack([m.task])))  # it did not hear our ack
            return
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
        )
        if problem is not None:
            self._ban(w, problem, now)
            return
        self._out.append(Send(worker, Ack([t.spec.task_id])))
        if m.error is not None:
            if not late:
                self._back(t, m.error, now)
            return
        if late:
            self._charge(w, r, packed, now)
            t.receipt = r
            return
        self._release(t)
        self._charge(w, r, packed, now)
        model = model_of(t.spec)
        wait = max(0.0, now - t.sent_at - r.duration)  # on its queue, and on the way
        self.predictor.observe(worker, model, t.input_bytes, wait_s=wait, run_s=r.duration, now=now)
        self.views.succeeded(worker, model, r.duration, t.spec.task_id, now=now)
        if self.durable and len(packed) > self.config.spool_result_bytes:
            output = Spooled.IN_STORE  # `_charge` handed it to the store
        t.output, t.receipt, t.error, t.progress = output, r, None, 1.0
        ran = f"{worker_name(worker)} ran it in {r.duration:.3g} s"
        self._move(t, S.COMPLETED, now, f"{ran}; its receipt verified, {r.price:g} paid")
        self._out.append(Settled(t.spec.task_id))

    def _charge(self, w: WorkerState, r: Receipt, packed: bytes, now: float) -> None:
        """Pay what `r` charges, and record it (with the result, as it came)."""
        self.money.pay(r.price)
        if self.durable:
            assert w.public_key is not None
            self.journal.append(Charged(r, w.public_key, packed, now))
