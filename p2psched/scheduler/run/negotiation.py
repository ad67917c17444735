"""The deal with workers: asking for quotes (cheapest first, a bounded number at once), taking
the answers (quote, decline, lease, reject), and the commit round that places queued tasks on
the candidates the strategy picks and sends each worker one commitment with its tasks, the
round's commitments under one signature.

Promises: a quote counts only if signed by the worker on the channel, for this scheduler and
job (or, for a paid-only job, adopted: see `adopt_quote`), and is used no longer than
`max_quote_s` from when it came; money is held for a task from the moment it is
placed; a commitment is journaled before it is sent; a worker that leases what it was not
committed, or keeps rejecting, is dropped.
"""

from __future__ import annotations

from functools import partial
from typing import TypeVar

from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.queue import Entry
from p2psched.scheduler.run.actions import Send
from p2psched.scheduler.run.config import (
    DECLINE_BACKOFF_S,
    MAX_ASIDE,
    MAX_BUSY_REJECTS,
    MAX_REJECTS,
    MAX_SCAN,
)
from p2psched.scheduler.run.links import CONNECTING, DOWN, NONE, UP
from p2psched.scheduler.run.moves import IN_FLIGHT, TaskMoves
from p2psched.scheduler.run.tasks import (
    Shape,
    TaskRun,
    gpus_of,
    model_of,
    shape_of,
    wire_task,
    worker_name,
)
from p2psched.scheduler.run.workers import WorkerState
from p2psched.scheduler.strategy import LATE_BINDING
from p2psched.store.journal import Committed
from p2psched.wire.codec import encode
from p2psched.wire.deal import MAX_BATCH, Commitment, Quote, signed_together
from p2psched.wire.messages import (
    Commit,
    Decline,
    Lease,
    QuoteReply,
    QuoteRequest,
    Reject,
    Reserve,
)

S = TaskState
_A = TypeVar("_A", QuoteRequest, Reserve)


class Negotiation(TaskMoves):
    def _ask_quotes(self, now: float) -> None:
        """Ask the workers that could take queued (or, rebalancing, waiting) tasks for a
        quote, cheapest first, at most `max_quotes` at once; dial those not linked yet."""
        asked = sum(1 for w in self.workers.values() if w.rid is not None)
        if self._by_price is None:  # cheapest first; sorted again only when workers change
            self._by_price = sorted(self.workers.values(), key=lambda w: w.ad.profile.min_price)
        for w in self._by_price:
            if asked >= self.config.max_quotes:
                break
            if w.rid is not None or w.quote is not None or w.link == DOWN:
                continue
            if now < w.ask_after:
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
            if w.link == NONE:
                self._dial(w)
                asked += 1
                continue
            if w.link != UP:
                continue
            spec = wanted[0]
            self._asked[w.ad.node_id] = spec
            rid = next(self._rids)
            w.rid, w.asked_at, w.ask_after = rid, now, 0.0
            asked += 1
            self.stats.negotiation["asked"] += 1
            n = min(MAX_BATCH, max(1, self._queued + self._seeking))
            self._out.append(Send(w.ad.node_id, self._ask(QuoteRequest, rid, n, spec)))

    def _ask(self, kind: type[_A], rid: int, n: int, spec: TaskSpec) -> _A:
        """A request for a quote or for places: for `n` tasks of `spec`'s kind, saying their
        priority, timeout, largest input and GPUs, which the worker may refuse or price by."""
        return kind(
            rid,
            self.job,
            n,
            spec.driver,
            model_of(spec),
            spec.max_price,
            priority=spec.priority,
            timeout=spec.timeout_s,
            input_bytes=self._shape_input.get(shape_of(spec)),
            gpus=gpus_of(spec),
        )

    def _quotes_settled(self, now: float) -> bool:
        """Commit once the quotes asked for are in, or after a short wait for the slow ones:
        committing on the first answer would hand the batch to whoever is nearest, not best."""
        asked = self._awaited()
        return not asked or min(asked) + self.config.quote_wait_s <= now

    def _awaited(self) -> list[float]:
        """When each quote still awaited was asked for: a quote requested, or one adopted
        whose worker's link is still being opened (links come up one at a time, and the
        first one up must not take the task before the others are seen)."""
        return [
            w.asked_at
            for w in self.workers.values()
            if w.rid is not None or (w.quote is not None and w.link == CONNECTING)
        ]

    def _commit_round(self, now: float) -> None:
        self._now = now
        batches: dict[bytes, list[TaskRun]] = {}
        # Tasks that no worker can take now (their only candidates are excluded, say) step
        # aside for this round, so that they do not hold up the tasks behind them.
        aside: list[Entry] = []
        # A kind of task whose head waits for a quote or for room keeps its order, but does
        # not hold up other kinds; once every kind waits, the round is over.
        waiting: set[Shape] = set()
        kinds = {shape for shape, n in self._shapes.items() if n > 0}
        stuck = 0  # aside because no worker can take them (not merely waiting for one)
        queue = self._queue
        while queue and stuck < MAX_ASIDE and len(aside) < MAX_SCAN and not kinds <= waiting:
            tid = queue.head()[3]
            t = self.tasks[tid]
            if t.state != S.QUEUED:
                queue.pop()
                continue
            shape = shape_of(t.spec)
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
            w = self.workers[best.worker]
            assert w.quote is not None
            w.room -= 1
            w.batch_bytes += t.input_bytes
            self._assign(t, w, w.quote.price, now)
            self._changed(w, now)
            batches.setdefault(best.worker, []).append(t)
        queue.put_back(aside)
        for w in self.workers.values():
            w.batch_bytes = 0
        # One signature for the round's commitments (one a worker), over their Merkle root.
        unsigned = []
        for worker, runs in batches.items():
            w = self.workers[worker]
            assert w.quote is not None
            unsigned.append(self._commitment(w, runs, w.quote.price, now))
        if unsigned:
            signed = self._sign(unsigned)
            for (worker, runs), commitment in zip(batches.items(), signed, strict=True):
                self._commit(self.workers[worker], runs, commitment, now)

    def _assign(self, t: TaskRun, w: WorkerState, price: float, now: float) -> None:
        """`t` goes to `w` at `price`: the money is held from now."""
        t.worker, t.price = w.ad.node_id, price
        self.money.hold(price)
        if not w.holding:  # silence is counted from when it holds something of ours
            w.heard = now
        w.holding.add(t.spec.task_id)
        if t.spec.task_id in self._group_of:
            self._keep_apart(t, w)
        why = f"chose {worker_name(w.ad.node_id)} at {price:g} ({self.strategy.name} strategy)"
        self._move(t, S.NEGOTIATING, now, why)

    def _commitment(
        self, w: WorkerState, runs: list[TaskRun], price: float, now: float
    ) -> Commitment:
        """The commitment of `runs` to `w` at `price` each, unsigned: tasks of one count of
        GPUs (its quote's, or its free place's), which the worker prices by."""
        return Commitment(
            scheduler=self.identity.node_id,
            worker=w.ad.node_id,
            job=self.job,
            tasks=[t.spec.task_id for t in runs],
            price=price,
            issued_at=now,
            gpus=gpus_of(runs[0].spec),
        )

    def _sign(self, commitments: list[Commitment]) -> list[Commitment]:
        return signed_together(commitments, self.identity)

    def _commit(
        self, w: WorkerState, runs: list[TaskRun], commitment: Commitment, now: float
    ) -> None:
        """Send `w` its signed `commitment` of `runs`, with the tasks."""
        price = commitment.price
        rid = next(self._rids)
        w.pending[rid] = commitment.tasks
        if self.durable:
            self.journal.append(Committed(commitment, w.ad.profile.addresses, now))
        placed = f"committed to {worker_name(w.ad.node_id)} at {price:g}"
        sent = f"sent to {worker_name(w.ad.node_id)} with its commitment"
        for t in runs:
            self._move(t, S.SCHEDULED, now, placed)
            self._move(t, S.SENT, now, sent)
        self.stats.negotiation["commit"] += 1
        # The tasks go with their commitment: the worker leases and queues them at once,
        # or rejects them all; a separate dispatch would cost a round trip per batch.
        self._out.append(Send(w.ad.node_id, Commit(rid, commitment, [wire_task(t) for t in runs])))

    # -- answers ---------------------------------------------------------------------------

    def _on_quote(self, w: WorkerState, m: QuoteReply, now: float) -> None:
        q = m.quote
        if m.rid != w.rid:
            return
        w.rid = None
        w.rtt = min(w.rtt, max(0.0, now - w.asked_at))
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
        # Validity is judged by our clock, and never trusted for longer than a short while.
        until = min(q.valid_until, now + self.config.max_quote_s)
        spec = self._asked.pop(w.ad.node_id, None)
        if spec is not None:
            w.run_estimate = self._run_estimate(w, spec, q, now)
        self._take_quote(w, q, until, now)

    def _run_estimate(self, w: WorkerState, spec: TaskSpec, q: Quote, now: float) -> float:
        """How long a task of `spec` is expected to run on `w`, which quoted `q`. What it ran
        for us before outweighs what it says; a worker that fails or stalls looks slower by
        its penalty, so it ranks lower on time."""
        estimate = self.predictor.estimate(
            w.ad.node_id,
            model_of(spec),
            len(encode(spec.input)),
            claimed_run=q.run_mean or None,
            tokens=spec.tokens,
        )
        return estimate.run_mean * self.views.penalty(w.ad.node_id, now)

    def _take_quote(self, w: WorkerState, q: Quote, until: float, now: float) -> None:
        if q.price != w.price:  # (a quote may ask more than the ad, by the job's priority)
            self._floors.clear()
        w.quote, w.room, w.declined, w.quote_until = q, q.capacity, None, until
        self._changed(w, now)

    def adopt_quote(self, worker: bytes, q: Quote, until: float, now: float) -> None:
        """Take `q`, which `worker` signed for this scheduler and another of its paid-only
        jobs of this one's kind (its shell checked it then), as this job's own until `until`
        (no later than that job would have used it): no round trip asks for it again, for
        one request of a stream of small ones (the OpenAI gateway's). What the worker
        checks of the commitment is the same either way; it takes it or rejects it. (Not
        taken by a job that is not paid-only, nor in late binding, which places by other
        means, nor once `until` has passed, nor from a worker already asked.) The run time it
        stands for is judged for this job's own task (its tokens may be another's), and the
        task waits for it as for a quote asked for while the worker's link is being opened."""
        w = self.workers.get(worker)
        if (
            not self.paid_only
            or w is None
            or until <= now
            or self.strategy.name == LATE_BINDING
            or w.rid is not None
            or w.quote is not None
            or w.banned
            or q.scheduler != self.identity.node_id
            or q.worker != worker
        ):
            return
        queued = next((t for t in self.tasks.values() if t.state == S.QUEUED), None)
        if queued is None or q.gpus != gpus_of(queued.spec):  # priced for other tasks
            return
        w.run_estimate = self._run_estimate(w, queued.spec, q, now)
        w.asked_at = now
        self._take_quote(w, q, until, now)

    def _on_decline(self, w: WorkerState, m: Decline, now: float) -> None:
        """A quote request declined, or (late binding) places asked for."""
        rid = m.rid
        if rid in w.reserved or rid == w.rid:
            if rid in w.reserved:
                self._reserved -= w.reserved.pop(rid)
            else:
                w.rid = None
            w.ask_after = now + DECLINE_BACKOFF_S
            # Busy is a "not now": the worker stays a candidate and is asked again.
            w.declined = None if m.busy else m.reason
            self._floors.clear()

    def _on_lease(self, w: WorkerState, m: Lease, now: float) -> None:
        ids = w.pending.pop(m.rid, None)
        if ids is None or set(m.tasks) != set(ids):
            self._ban(w, "leased tasks that were not committed to it", now)
            return
        # The tasks travelled with the commitment: the lease confirms they are in its queue.

    def _on_reject(self, w: WorkerState, m: Reject, now: float) -> None:
        ids = w.pending.pop(m.rid, None) or []
        for i in ids:
            t = self.tasks[i]
            if t.state in IN_FLIGHT and t.worker == w.ad.node_id:
                self._back(t, f"commitment rejected: {m.reason}", now, count=False)
        w.quote, w.room, w.ask_after = None, 0, now + DECLINE_BACKOFF_S
        self._changed(w, now)
        if m.busy:  # its room went to someone else meanwhile: ask again in a while
            w.busy_rejects += 1
            if w.busy_rejects >= MAX_BUSY_REJECTS:  # ... but not for ever
                w.declined = m.reason
                self._floors.clear()
            return
        w.rejects += 1
        # A worker that keeps quoting and then rejecting is out for this job: otherwise the
        # same commitment and its inputs would go back and forth for ever.
        w.declined = m.reason if w.rejects >= MAX_REJECTS else None
        self._floors.clear()
