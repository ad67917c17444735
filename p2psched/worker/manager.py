"""The worker's task manager, sans-I/O: quotes, leases, the local queue, slots, results and
receipts. It takes messages from schedulers and `now`, and gives back actions for its shell.

Owns: what this worker has promised (leases), holds (its queue) and runs (its slots), the
results it has not yet seen acknowledged, and its drivers' run times (plain histograms, which
the node's metrics read).
Promises: it never starts more tasks than it has slots, nor a task before the GPUs it needs
are free (`worker.devices`: they stay its own until it has ended), and prices a task by the
slots its GPUs take; it runs a task only if the scheduler holds a lease for it, committed
for the GPUs it asks, the task's driver is enabled, and the task is within its driver's
caps (timeout, input size) and the operator's `SchedulerPolicy` (who, how many, how much);
a lease not followed by a dispatch expires after `lease_s`; every result carries a
`Receipt` signed by this worker, and is sent again when its scheduler reconnects, until
acknowledged (signed in a batch of its scheduler's: `worker.receipts`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from p2psched.histogram import RUN_TIME_BUCKETS, Histogram
from p2psched.identity import Identity
from p2psched.store.journal import Accepted, Entry, Issued
from p2psched.wire.codec import encode
from p2psched.wire.deal import MAX_RESERVED, Quote, unsendable
from p2psched.wire.messages import (
    Ack,
    Beat,
    Cancel,
    Commit,
    Decline,
    Lease,
    Message,
    Model,
    Partial,
    QuoteReply,
    QuoteRequest,
    Ready,
    Reject,
    Reserve,
    Result,
    Run,
    Send,
    Task,
    Unreserve,
    Withdraw,
    Withdrawn,
    kind,
    said,
)
from p2psched.wire.schema import SchemaError
from p2psched.worker.devices import Claim, Devices, gpus_said, gpus_unpaid
from p2psched.worker.holdings import Abort as Abort
from p2psched.worker.holdings import Action as Action
from p2psched.worker.holdings import Held, Leased, Reservation, RunTimes, Scheduler
from p2psched.worker.holdings import Start as Start
from p2psched.worker.policy import Standing, Terms
from p2psched.worker.receipts import ResultsToSign

DRAINING = "this worker is draining and takes no new tasks"
TaskKey = tuple[bytes, str]  # (scheduler's node id, task id): task ids are only unique per job
ReservationKey = tuple[bytes, int]  # (scheduler's node id, its request id)


@dataclass(slots=True)
class TaskManager:
    """The worker role's core: what it promised (leases), holds (its queue) and runs (its
    slots) for each scheduler, and the results it keeps until they are acknowledged. Messages
    and `now` go in (`receive`, `tick`, `finished`); `actions()` gives what to send or start."""

    identity: Identity
    slots: int = 1
    queue_depth: int = 4  # tasks accepted beyond the slots, so a slot never waits on the network
    price: float = 0.0  # asked per task of normal priority (the others: `terms.prices`)
    refusal: Callable[[str, str | None], str | None] = lambda d, m: None  # (driver, model): why not
    terms: Terms = field(default_factory=Terms)  # caps, prices by priority, who and how much
    devices: Devices = field(default_factory=Devices)  # its GPUs, and which task has which
    claim: Callable[[Task], Claim] = lambda task: Claim()  # what a task asks of them
    lease_s: float = 10.0
    heartbeat_s: float = 1.0
    quote_valid_s: float = 10.0
    keep_results_s: float = 600.0
    # A scheduler gone this long has its running tasks stopped: it may never come back, and
    # they would hold slots others could use (their results, if any, are still kept for it).
    # Longer than a scheduler's regain window (45 s, `DispatchConfig.regain_s`): one that
    # lost us with a gate finds its tasks still running here when it dials us again.
    scheduler_grace_s: float = 60.0
    max_unacked: int = 256  # results kept per scheduler until acknowledged
    max_unacked_bytes: int = 256 << 20  # and by all of them together
    _unacked_bytes: int = 0
    _peers: dict[bytes, Scheduler] = field(default_factory=dict)
    _leases: dict[TaskKey, Leased] = field(default_factory=dict)
    _queue: deque[TaskKey] = field(default_factory=deque)
    _held: dict[TaskKey, Held] = field(default_factory=dict)  # queued or running
    _running: set[TaskKey] = field(default_factory=set)
    _aborting: set[TaskKey] = field(default_factory=set)  # cancelled, still stopping
    _unacked: dict[TaskKey, tuple[float, Result, int]] = field(default_factory=dict)
    _run_times: dict[str, RunTimes] = field(default_factory=dict)
    # Seconds each driver took per task run here (ended by itself, with or without an error).
    run_seconds: dict[str, Histogram] = field(default_factory=dict)
    # Late binding: places reserved, in arrival order, and slots held for a scheduler that
    # was told one is free and has not answered yet (until when).
    _reserved: dict[ReservationKey, Reservation] = field(default_factory=dict)
    _pulling: dict[ReservationKey, list[float]] = field(default_factory=dict)
    _out: list[Action] = field(default_factory=list)
    draining: bool = False
    # The deals it made, for the node's ledger (when `durable`): the shell records them
    # before it sends what they answer (a lease, a result).
    durable: bool = False
    journal: list[Entry] = field(default_factory=list)
    # Results waiting unsigned, to share a signature with their scheduler's next ones.
    _unsigned: ResultsToSign = field(default_factory=ResultsToSign)

    # -- what the shell reads -------------------------------------------------------------

    def actions(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    @property
    def free_slots(self) -> int:
        """What the ad says: none while draining, so schedulers look elsewhere."""
        return 0 if self.draining else max(0, self.slots - self._busy_slots)

    @property
    def _busy_slots(self) -> int:
        return len(self._running) + sum(len(p) for p in self._pulling.values())

    @property
    def _free_slot(self) -> bool:
        return self._busy_slots < self.slots

    @property
    def running(self) -> int:
        """Tasks running now, one per busy slot."""
        return len(self._running)

    @property
    def unacked(self) -> tuple[int, int]:
        """Results kept until their scheduler acknowledges them: how many, and their bytes."""
        return len(self._unacked), self._unacked_bytes

    @property
    def tasks_held(self) -> int:
        """Tasks leased, queued or running here."""
        return len(self._leases) + len(self._held)

    @property
    def capacity(self) -> int:
        """Tasks this worker would lease now."""
        return max(0, self.slots + self.queue_depth - len(self._leases) - len(self._held))

    def next_deadline(self) -> float:
        times = [self._unsigned.next_deadline(), *(x.expires for x in self._leases.values())]
        times += [p.next_beat for p in self._peers.values() if p.connected]
        times += [t + self.keep_results_s for t, _, _ in self._unacked.values()]
        times += [min(p) for p in self._pulling.values()]
        times += [self._grace_end(peer) for peer in self._gone_running()]
        return min(times)

    def _gone_running(self) -> set[bytes]:
        """Schedulers gone while tasks of theirs run here."""
        return {p for p, _ in self._running if not self._peers[p].connected}

    def _grace_end(self, peer: bytes) -> float:
        return self._peers[peer].gone_at + self.scheduler_grace_s

    # -- events ---------------------------------------------------------------------------

    def drain(self, on: bool) -> None:
        """While draining, it takes no new tasks (it declines and rejects, and its ad shows no
        free slot); what it holds runs to the end."""
        self.draining = on

    def connected(self, peer: bytes, public_key: bytes, now: float) -> None:
        known = self._peers.get(peer)
        if known is not None and known.connected:
            # A new channel while the old one seemed alive: the scheduler restarted (its host
            # crashed, so no reset came). What it queued here is not its now: drop it, as its
            # first heartbeat back tells it.
            self.disconnected(peer, now)
        self._sign_results(math.inf)  # (any finished while it was away are sent now)
        self._peers[peer] = Scheduler(public_key)
        for (p, _), (_, message, _) in self._unacked.items():
            if p == peer:  # finished while the scheduler was away
                self._out.append(Send(peer, message))
        # At once, even if empty: a scheduler that restarted learns from it which of the
        # tasks it had sent here still run (the queued ones went when it went away).
        self._beat(peer, always=True)
        self._schedule_beat(peer, now)

    def disconnected(self, peer: bytes, now: float) -> None:
        """The scheduler is gone: its leases and waiting tasks go (it will place them again
        elsewhere); running ones run on for `scheduler_grace_s`, and their results wait for
        it to come back; if it is not back by then, they are stopped."""
        if peer in self._peers:
            self._peers[peer].connected = False
            self._peers[peer].gone_at = now
        for key in [k for k in self._leases if k[0] == peer]:
            del self._leases[key]
        for key in [k for k in self._queue if k[0] == peer]:
            self._queue.remove(key)
            del self._held[key]
        for rkey in [k for k in (*self._reserved, *self._pulling) if k[0] == peer]:
            self._reserved.pop(rkey, None)
            self._pulling.pop(rkey, None)
        self._start_next(now)
        if not self.holds_for(peer):
            self._peers.pop(peer, None)  # nothing to deliver to it later

    def holds_for(self, peer: bytes) -> bool:
        """Whether this worker holds tasks of `peer`'s, or results it has not acknowledged."""
        mine = any(k[0] == peer for k in (*self._held, *self._unacked))
        return mine or self._unsigned.owed_to(peer)

    def receive(self, peer: bytes, message: Message, now: float) -> None:
        """A checked message (see `wire.messages.parse`) from a connected scheduler. Raises
        `SchemaError` for a kind a worker does not take."""
        handler = _HANDLERS.get(type(message))
        if handler is None:
            raise SchemaError("t", f"a worker does not take {kind(message)!r} messages")
        handler(self, peer, message, now)

    def progress(self, peer: bytes, task_id: str, fraction: float) -> None:
        held = self._held.get((peer, task_id))
        if held is not None:
            held.progress = min(1.0, max(0.0, fraction))

    def partial(self, peer: bytes, task_id: str, output: Any) -> None:
        """A running task's driver produced part of its output (a streamed answer's chunk):
        it goes to the scheduler at once, if it is connected, and is not kept (the result
        carries the whole output, which the receipt covers). One that cannot be sent is left
        out: the result will say what was wrong with the whole."""
        scheduler = self._peers.get(peer)
        if (peer, task_id) not in self._running or scheduler is None:
            return  # cancelled, or stopping
        packed, problem = unsendable(output)
        if problem is None and scheduler.connected:
            self._out.append(Send(peer, Partial(task_id, msgspec.Raw(packed))))

    def finished(
        self, peer: bytes, task_id: str, output: Any, error: str | None, now: float
    ) -> bool:
        """A started task ended: `error` None means it ran to `output`. True if that output
        goes back as its result (it can be sent, and someone still wants it)."""
        key = (peer, task_id)
        self.devices.give_back(key)
        if key in self._aborting:  # cancelled while it ran: nobody wants the result
            self._aborting.discard(key)
            self._start_next(now)
            return False
        held = self._held.pop(key)
        self._running.discard(key)
        duration = max(0.0, now - held.started)
        driver = held.task.driver
        if driver not in self.run_seconds:
            self.run_seconds[driver] = Histogram(RUN_TIME_BUCKETS)
        self.run_seconds[driver].observe(duration)
        if error is None:
            packed, error = unsendable(output)
        if error is None:
            self._run_times.setdefault(driver, RunTimes()).add(duration)
        else:
            packed = encode(None)
        self._result(peer, held, packed, error, duration, now)
        self._start_next(now)
        return error is None

    def tick(self, now: float) -> None:
        self._sign_results(now)
        for key in [k for k, lease in self._leases.items() if lease.expires <= now]:
            del self._leases[key]
        for key in [k for k, (t, _, _) in self._unacked.items() if t + self.keep_results_s <= now]:
            self._unacked_bytes -= self._unacked.pop(key)[2]
        for rkey, until in list(self._pulling.items()):  # the scheduler did not answer
            if kept := [t for t in until if t > now]:
                self._pulling[rkey] = kept
            else:
                del self._pulling[rkey]
            if len(kept) < len(until):
                # A scheduler that lets a `ready` go unanswered is not taking its places:
                # they go, or 64 of them would hold each free slot for `lease_s` in turn.
                self._reserved.pop(rkey, None)
        for peer in self._gone_running():
            if self._grace_end(peer) <= now:
                self._stop(peer, [t for p, t in self._running if p == peer])
        self.terms.spending.forget_old(now)
        self._start_next(now)
        for peer, state in self._peers.items():
            if state.connected and state.next_beat <= now:
                self._beat(peer)
                self._schedule_beat(peer, now)

    # -- handlers -------------------------------------------------------------------------

    def _price(self, gpus: int, priority: int | None = None) -> float:
        """Asked of a task of `gpus` GPUs at `priority` (None: the least, at any priority)."""
        held = self.devices.slots_held(gpus, self.slots)
        return self.price * self.terms.prices.multiplier(priority) * held

    def _on_quote_request(self, peer: bytes, m: QuoteRequest, now: float) -> None:
        price = self._price(m.gpus, m.priority)
        busy = self.terms.over(peer, 1, self._standing(peer), price, now)
        if busy is None and self.capacity == 0:
            busy = f"too busy: {len(self._held)} tasks held and {self.slots} slots full"
        if self._declined(peer, m, price, busy):
            return
        times = self._run_times.get(m.driver, RunTimes())
        room = self.terms.room(peer, self._standing(peer), price, now)
        ahead = max(0, len(self._held) + len(self._leases) - self.slots + 1)
        quote = Quote(
            worker=self.identity.node_id,
            scheduler=peer,
            job=m.job,
            price=price,
            wait_mean=ahead * times.mean / max(1, self.slots),
            wait_err=math.sqrt(ahead * times.var) / max(1, self.slots),
            run_mean=times.mean,
            capacity=int(min(self.capacity, m.tasks, room)),
            valid_until=now + self.quote_valid_s,
            gpus=m.gpus,
        ).signed(self.identity)
        self._out.append(Send(peer, QuoteReply(m.rid, quote)))

    def _on_commit(self, peer: bytes, m: Commit, now: float) -> None:
        c = m.commitment
        reason, busy = None, False
        if not c.verify(self._peers[peer].public_key) or c.scheduler != peer:
            reason = "the commitment is not signed by the scheduler on this channel"
        elif c.worker != self.identity.node_id:
            reason = "the commitment names another worker"
        elif (refused := self.terms.policy.refusal(peer)) is not None:
            reason = refused
        elif c.price < (least := self._price(c.gpus)):  # the cheapest band, for its GPUs
            reason = f"price {c.price:g} is below this worker's minimum {least:g} for a task"
            reason += f" of {gpus_said(c.gpus)}" if c.gpus else ""
        elif self.draining:
            reason = DRAINING
        elif len(c.tasks) > self.capacity + self._pulled(peer):
            reason = f"state changed: room for {self.capacity} tasks now, not {len(c.tasks)}"
            busy = True
        # (its tasks take the slots held for its answer: those are not counted twice)
        elif limited := self.terms.over(
            peer, len(c.tasks), self._standing(peer, pulled=False), c.price, now
        ):
            reason, busy = limited, True
        elif any(
            (peer, t) in self._held or (peer, t) in self._leases or (peer, t) in self._aborting
            for t in c.tasks
        ):
            reason = "some of these tasks are already leased, held or still stopping here"
        elif not {t.id for t in m.run} <= set(c.tasks):
            reason = "tasks sent with a commitment must be among the tasks it names"
        else:
            reason = self.terms.over_caps(m.run) or gpus_unpaid(m.run, c.gpus)
        if reason is not None:
            self._out.append(Send(peer, Reject(m.rid, said(reason), busy)))
            return
        expires = now + self.lease_s
        if self.durable:
            self.journal.append(Accepted(c, self._peers[peer].public_key, now))
        self._bind(peer, len(c.tasks))
        for t in c.tasks:
            self._leases[(peer, t)] = Leased(c.job, c.price, expires, c.gpus)
        self._out.append(Send(peer, Lease(m.rid, c.tasks, expires)))
        if m.run:
            self._on_run(peer, Run(m.run), now)

    def _on_run(self, peer: bytes, m: Run, now: float) -> None:
        for task in m.tasks:
            key = (peer, task.id)
            lease = self._leases.pop(key, None)
            # Checked again, whatever its quote request said: a scheduler may lie there.
            reason = (
                self._refuse(peer, task.driver, task.model, math.inf, 0.0)
                or self.terms.over_caps([task])
                or self.devices.refusal(self.claim(task))
                or (gpus_unpaid([task], lease.gpus) if lease else None)
            )
            if lease is None:
                reason = "no lease for this task here (it expired or was never granted)"
            if reason is not None:
                held = Held(lease.job if lease else "", 0.0, task, started=now)
                self._result(peer, held, encode(None), reason, 0.0, now)
                continue
            assert lease is not None
            self._held[key] = Held(lease.job, lease.price, task)
            self._queue.append(key)
        self._start_next(now)

    def _on_ack(self, peer: bytes, m: Ack, now: float) -> None:
        for t in m.tasks:
            kept = self._unacked.pop((peer, t), None)
            if kept is not None:
                self._unacked_bytes -= kept[2]

    def _on_cancel(self, peer: bytes, m: Cancel, now: float) -> None:
        self._stop(peer, m.tasks)
        self._start_next(now)

    def _stop(self, peer: bytes, task_ids: list[str]) -> None:
        """Drop these tasks of `peer`'s: leased, queued or running (those are aborted)."""
        for t in task_ids:
            key = (peer, t)
            self._leases.pop(key, None)
            if key in self._held:
                del self._held[key]
                if key in self._running:
                    self._running.discard(key)
                    self._aborting.add(key)
                    self._out.append(Abort(peer, t))
                else:
                    self._queue.remove(key)

    def _on_reserve(self, peer: bytes, m: Reserve, now: float) -> None:
        held = sum(r.count for k, r in self._reserved.items() if k[0] == peer)
        price = self._price(m.gpus, m.priority)
        busy = self.terms.over(peer, 1, self._standing(peer), price, now)
        if busy is None and held + m.tasks > MAX_RESERVED:
            busy = f"too many places reserved here: {held} of {MAX_RESERVED}"
        if self._declined(peer, m, price, busy):
            return
        if m.tasks:
            rkey = (peer, m.rid)
            r = self._reserved.setdefault(rkey, Reservation(0, m.gpus))
            r.count += m.tasks
        self._start_next(now)

    def _on_withdraw(self, peer: bytes, m: Withdraw, now: float) -> None:
        """Give back the tasks named that wait in the queue (a started one runs on): the
        scheduler places them elsewhere, so each runs once, here or there."""
        taken = []
        for t in m.tasks:
            key = (peer, t)
            if key in self._held and key not in self._running:
                self._queue.remove(key)
                del self._held[key]
                taken.append(t)
        self._out.append(Send(peer, Withdrawn(m.rid, taken)))

    def _on_unreserve(self, peer: bytes, m: Unreserve, now: float) -> None:
        self._reserved.pop((peer, m.rid), None)
        self._pulling.pop((peer, m.rid), None)
        self._start_next(now)

    # -- helpers --------------------------------------------------------------------------

    def _declined(
        self, peer: bytes, m: QuoteRequest | Reserve, price: float, busy: str | None
    ) -> bool:
        """Decline a request for a quote or for places at `price`, if this worker must: for
        good (the scheduler, the driver, its caps, the price, draining), or for now (`busy`:
        why it or the scheduler's share of it is full). True if declined."""
        caps = self.terms.caps_of(m.driver).refusal(m.driver, m.timeout, m.input_bytes)
        reason = self._refuse(peer, m.driver, m.model, m.max_price, price) or caps or busy
        if reason is not None:
            self._out.append(Send(peer, Decline(m.rid, said(reason), reason is busy)))
        return reason is not None

    def _pulled(self, peer: bytes) -> int:
        """Slots held for `peer`'s answer to a `ready`."""
        return sum(len(p) for k, p in self._pulling.items() if k[0] == peer)

    def _bind(self, peer: bytes, n: int) -> None:
        """`n` tasks came from `peer`: they take the slots held for its answer first."""
        for rkey in [k for k in self._pulling if k[0] == peer]:
            if n <= 0:
                return
            until = self._pulling[rkey]
            taken = min(n, len(until))
            n -= taken
            if taken == len(until):
                del self._pulling[rkey]
            else:
                del until[:taken]

    def _refuse(self, peer: bytes, driver: str, model: Model, bid: float, ask: float) -> str | None:
        reason = self.refusal(driver, model) or self.terms.policy.refusal(peer)
        if reason is None and bid < ask:
            reason = f"price below its minimum: asks {ask:g}, offered at most {bid:g}"
        if reason is None and self.draining:
            reason = DRAINING
        return reason

    def _standing(self, peer: bytes, *, pulled: bool = True) -> Standing:
        """What `peer` holds here, as its limits measure it: tasks leased, queued or running
        (and with `pulled`, the slots held for its answer), and what those tasks are worth."""

        def standing() -> tuple[int, float]:
            leased = [lease.price for (p, _), lease in self._leases.items() if p == peer]
            held = [h.price for (p, _), h in self._held.items() if p == peer]
            pulls = self._pulled(peer) if pulled else 0
            return len(leased) + len(held) + pulls, sum(leased) + sum(held)

        return standing

    def _start_next(self, now: float) -> None:
        while self._queue and self._busy_slots < self.slots:
            key = self._queue[0]
            held = self._held[key]
            # In order: a task waiting for GPUs in use is not overtaken by smaller ones,
            # which could keep it waiting for ever.
            devices = self.devices.take(key, self.claim(held.task))
            if devices is None:
                break
            self._queue.popleft()
            held.started = now
            self._running.add(key)
            self._out.append(Start(key[0], held.task, devices))
        # Tasks sent are served first; then a free slot is offered to the oldest reservation
        # whose scheduler may take one more task (at the least price for its GPUs).
        # (none while a task waits here for GPUs: a slot it waits in is not free)
        while self._reserved and not self._queue and not self.draining and self._free_slot:
            rkey = next(
                (
                    k
                    for k, r in self._reserved.items()
                    if not self.terms.policy.refusal(k[0])
                    and not self.terms.over(k[0], 1, self._standing(k[0]), self._price(r.gpus), now)
                ),
                None,
            )
            if rkey is None:
                return
            r = self._reserved[rkey]
            r.count -= 1
            if r.count <= 0:
                del self._reserved[rkey]
            self._pulling.setdefault(rkey, []).append(now + self.lease_s)
            self._out.append(Send(rkey[0], Ready(rkey[1], self._price(r.gpus), r.gpus)))

    def _result(
        self,
        peer: bytes,
        held: Held,
        packed: bytes,
        error: str | None,
        duration: float,
        now: float,
    ) -> None:
        """Send (and keep, if it succeeded) a result: `packed` is its output, encoded (None
        encoded, on an error)."""
        if error is None:
            self.terms.spending.charge(peer, held.price, now)
        more = any(k[0] == peer for k in self._held)
        self._unsigned.add(self.identity, peer, held, packed, error, duration, now, more)
        self._sign_results(now)  # (its batch, if it is due)

    def _sign_results(self, now: float) -> None:
        """Sign the results due by `now`, then journal, keep and send them."""
        for u, message in self._unsigned.signed(self.identity, now):
            if self.durable:
                self.journal.append(Issued(message.receipt, u.made_at))
            if message.receipt.ok:
                self._keep(u.peer, message.task, message, u.size, u.made_at)
            if self._peers.get(u.peer, Scheduler(b"", connected=False)).connected:
                self._out.append(Send(u.peer, message))

    def _keep(self, peer: bytes, task_id: str, message: Result, size: int, now: float) -> None:
        """Hold a result until its scheduler acknowledges it, within bounds: a scheduler that
        never acknowledges loses its oldest results, not this worker its memory."""
        self._unacked[(peer, task_id)] = (now, message, size)
        self._unacked_bytes += size
        mine = [k for k in self._unacked if k[0] == peer] if len(self._unacked) > 64 else []
        for key in mine[: max(0, len(mine) - self.max_unacked)]:
            self._unacked_bytes -= self._unacked.pop(key)[2]
        while self._unacked_bytes > self.max_unacked_bytes and len(self._unacked) > 1:
            oldest = next(iter(self._unacked))  # across schedulers: identities are free
            self._unacked_bytes -= self._unacked.pop(oldest)[2]

    def _beat(self, peer: bytes, *, always: bool = False) -> None:
        mine = [k for k in self._running if k[0] == peer]
        if always or mine or any(k[0] == peer for k in self._held):
            beat = Beat([k[1] for k in mine], [self._held[k].progress for k in mine])
            self._out.append(Send(peer, beat))

    def _schedule_beat(self, peer: bytes, now: float) -> None:
        self._peers[peer].next_beat = now + self.heartbeat_s


# What a scheduler may say, and who hears it. (Each handler takes its own type of message:
# the table is what pairs them, so it is typed loosely.)
_HANDLERS: dict[type[Message], Callable[[TaskManager, bytes, Any, float], None]] = {
    QuoteRequest: TaskManager._on_quote_request,
    Commit: TaskManager._on_commit,
    Run: TaskManager._on_run,
    Ack: TaskManager._on_ack,
    Cancel: TaskManager._on_cancel,
    Reserve: TaskManager._on_reserve,
    Unreserve: TaskManager._on_unreserve,
    Withdraw: TaskManager._on_withdraw,
}
