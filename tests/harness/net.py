"""A scheduler's `JobRun` and workers' `TaskManager`s joined in memory on a virtual clock
(`Net`): messages cross through the real codec and schemas, in order; tasks run at once
unless a test holds them. Plus the tasks, ads and messages the tests of both cores build."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec.structs import replace as restruct

from p2psched.identity import Identity
from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import (
    Close,
    Compare,
    Connect,
    JobRun,
    Send,
    Settled,
    Streamed,
    TaskRun,
)
from p2psched.scheduler.strategy import Strategy
from p2psched.store import StoredTask
from p2psched.wire import messages
from p2psched.wire.codec import decode, encode
from p2psched.wire.deal import Commitment, signed_batch
from p2psched.wire.messages import Message, parse
from p2psched.worker import manager as wm

S = TaskState


def wire(message: dict[str, Any]) -> Message:
    """A message as it arrives from the wire: `message` encoded, then parsed."""
    return parse(encode(message))


def on_wire(message: Any) -> Any:
    """What a message (or a task in one) looks like on the wire, decoded."""
    return decode(messages.encode(message))


def spec(
    i: int,
    *,
    driver: str = "echo",
    retries: int = 2,
    timeout: float = 60.0,
    max_price: float = math.inf,
    need: str = "",
) -> TaskSpec:
    """Task `i` of job "job": an echo of {"n": i} by default, with the limits given."""
    return TaskSpec(
        task_id=f"job-{i:06d}",
        index=i,
        name=str(i),
        driver=driver,
        input={"n": i},
        need=Need.parse(need),
        timeout_s=timeout,
        max_price=max_price,
        retries=retries,
        priority=5,
    )


def ad(
    identity: Identity,
    price: float = 0.0,
    drivers: tuple[str, ...] = ("echo",),
    *,
    address: str = "127.0.0.1:1",
    labels: tuple[tuple[str, str], ...] = (),
) -> WorkerAd:
    """`identity`'s ad as a scheduler reads it: a small worker at `price`, one slot free."""
    profile = Profile(
        cpu_model="cpu",
        cpu_cores=4,
        ram_gb=8.0,
        min_price=price,
        drivers=drivers,
        free_slots=1,
        addresses=(address,),
        labels=labels,
    )
    return WorkerAd(identity.node_id, profile, seq=1, expires=1e12)


@dataclass
class Net:
    """A scheduler and workers; messages cross through the codec and the schemas, in order;
    tasks run instantly unless a test holds them."""

    run: JobRun
    workers: dict[bytes, wm.TaskManager]
    now: float = 1000.0
    up: set[bytes] = field(default_factory=set)
    hold: bool = False  # started tasks wait for `finish`
    started: list[tuple[bytes, bytes, dict[str, Any]]] = field(default_factory=list)
    behave: dict[bytes, Any] = field(default_factory=dict)  # worker -> message rewriter
    settled: list[str] = field(default_factory=list)
    streamed: list[tuple[str, Any]] = field(default_factory=list)  # partial results passed on
    closed: list[tuple[bytes, str]] = field(default_factory=list)
    relayed: set[bytes] = field(default_factory=set)  # workers reached through a gate
    refuse: set[bytes] = field(default_factory=set)  # workers a dial does not reach now
    stall: set[bytes] = field(default_factory=set)  # ... nor fail yet: it hangs
    dials: list[bytes] = field(default_factory=list)  # every Connect, in order
    # worker -> what it answers a task (its input given) when it runs it at once: a liar's
    answers: dict[bytes, Any] = field(default_factory=dict)
    compares: list[Any] = field(default_factory=list)  # Compare actions, for the test to answer

    def pump(self, rounds: int = 10_000) -> None:
        for _ in range(rounds):
            moved = False
            for a in self.run.actions():
                moved = True
                if isinstance(a, Connect):
                    self.dials.append(a.worker)
                    if a.worker in self.stall:
                        continue  # the test ends the dial with `dialed`
                    self.dialed(a.worker, a.worker in self.workers and a.worker not in self.refuse)
                elif isinstance(a, Send):
                    if a.peer in self.up:
                        self.workers[a.peer].receive(
                            self.run.identity.node_id, parse(messages.encode(a.message)), self.now
                        )
                elif isinstance(a, Close):
                    self.closed.append((a.worker, a.reason))
                    self.drop(a.worker, tell_scheduler=False)
                elif isinstance(a, Settled):
                    self.settled.append(a.task_id)
                elif isinstance(a, Streamed):
                    self.streamed.append((a.task_id, a.output))
                elif isinstance(a, Compare):
                    self.compares.append(a)
            for wid, w in self.workers.items():
                for b in w.actions():
                    moved = True
                    if isinstance(b, Send) and wid in self.up:
                        frame = messages.encode(b.message)
                        if wid in self.behave:  # it says what it likes, on the wire
                            frame = encode(self.behave[wid](decode(frame)))
                        self.run.receive(wid, parse(frame), self.now)
                    elif isinstance(b, wm.Start):
                        task = on_wire(b.task)
                        if self.hold:
                            self.started.append((wid, b.peer, task))
                        else:
                            answer = self.answers.get(wid, lambda x: {"out": x})
                            w.finished(b.peer, task["id"], answer(task["input"]), None, self.now)
            if not moved:
                return
        raise AssertionError("no quiescence")

    def dialed(self, worker: bytes, ok: bool) -> None:
        """A dial to `worker` ends: the channel is up, or it failed."""
        if ok:
            self.up.add(worker)
            self.workers[worker].connected(
                self.run.identity.node_id, self.run.identity.public_key, self.now
            )
            self.run.connected(worker, self._key(worker), self.now, relayed=worker in self.relayed)
        else:
            self.run.disconnected(worker, "refused", self.now)

    def _key(self, worker: bytes) -> bytes:
        return self.workers[worker].identity.public_key

    def drop(self, worker: bytes, *, tell_scheduler: bool = True) -> None:
        self.up.discard(worker)
        self.workers[worker].disconnected(self.run.identity.node_id, self.now)
        if tell_scheduler:
            relayed = worker in self.relayed
            self.run.disconnected(worker, "connection reset", self.now, relayed=relayed)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for w in self.workers.values():
                w.tick(self.now)
            self.run.tick(self.now)
            self.pump()


def make_net(
    n_tasks: int,
    n_workers: int,
    *,
    prices: list[float] | None = None,
    budget: float = math.inf,
    mtr: float = 0.0,
    **task: Any,
) -> Net:
    """A `Net` of `n_tasks` tasks over `n_workers` workers (two slots and a queue of two
    each, at `prices`), the workers found and the net pumped until quiet."""
    sched = Identity.generate()
    ids = [Identity.generate() for _ in range(n_workers)]
    prices = prices or [0.0] * n_workers
    workers = {
        i.node_id: wm.TaskManager(i, slots=2, queue_depth=2, price=p) for i, p in zip(ids, prices)
    }
    run = JobRun(
        sched, "job", [spec(k, **task) for k in range(n_tasks)], mtr=mtr, budget=budget, now=1000.0
    )
    net = Net(run, workers)
    run.add_workers([ad(i, p) for i, p in zip(ids, prices)], net.now)
    net.pump()
    return net


def net_with(strategy: str, n_tasks: int, n_workers: int, *, slots: int = 2) -> Net:
    """A `Net` of `n_tasks` tasks over `n_workers` workers at MTR 1, its run choosing by
    `strategy` (seeded); the workers are found but the net is not pumped yet."""
    sched = Identity.generate()
    ids = [Identity.generate() for _ in range(n_workers)]
    workers = {i.node_id: wm.TaskManager(i, slots=slots, queue_depth=2) for i in ids}
    run = JobRun(
        sched,
        "job",
        [spec(k) for k in range(n_tasks)],
        mtr=1.0,
        now=1000.0,
        strategy=Strategy(strategy, seed=3),
    )
    net = Net(run, workers)
    run.add_workers([ad(i) for i in ids], net.now)
    return net


def receipts_verify(net: Net) -> None:
    """Every task of `net` completed, with a receipt its worker signed for it."""
    for t in net.run.tasks.values():
        assert t.state == S.COMPLETED
        r = t.receipt
        assert r is not None and t.worker is not None
        assert r.verify(net.workers[t.worker].identity.public_key)
        assert r.task == t.spec.task_id


def _resigned_by(doc: Any, stranger: Identity) -> Any:
    """`doc` (naming its signer still) in a batch of two whose root `stranger` signed."""
    alone = restruct(doc, sig=b"", batch=msgspec.UNSET)
    return signed_batch(stranger, [alone, restruct(alone, price=alone.price + 1)])[0]


# Documents of a batch (receipts, commitments) forged, each in one way; (document, a stranger)
# -> the forgery.
BATCH_FORGERIES: dict[str, Callable[[Any, Identity], Any]] = {
    # a sibling hash on its path made up
    "path": lambda r, _: restruct(r, batch=restruct(r.batch, path=[bytes(32), *r.batch.path[1:]])),
    # the leaf moved to its neighbour's place, path and all
    "moved": lambda r, _: restruct(r, batch=restruct(r.batch, index=r.batch.index ^ 1)),
    # ... or to a place past its tree, whose low bits are its own
    "past_tree": lambda r, _: restruct(
        r, batch=restruct(r.batch, index=r.batch.index + (1 << len(r.batch.path)))
    ),
    # naming this signer, its batch's root signed by another
    "other_signer": _resigned_by,
    # its proof valid, one of its fields edited after
    "fields": lambda r, _: restruct(r, price=r.price + 1),
    # a batch's root known good, under a signature that is not the signer's
    "signature": lambda r, _: restruct(r, sig=bytes(64)),
}


def nobody_at_fault(t: TaskRun) -> bool:
    """Whether `t` has been held against no worker: no attempt counted, none excluded."""
    return t.attempts == 0 and not t.excluded


def commit(w: wm.TaskManager, sched: Identity, task_id: str, now: float, gpus: int = 0) -> None:
    """`sched` commits `task_id` (needing `gpus` GPUs) to the worker `w`, as its scheduler
    core would."""
    c = Commitment(sched.node_id, w.identity.node_id, "job", [task_id], 0.0, now, gpus)
    c = c.signed(sched)
    w.receive(
        sched.node_id,
        wire({"t": "commit", "rid": 1, "commitment": c.to_wire(), "run": []}),
        now,
    )


def dispatch(w: wm.TaskManager, sched: Identity, task_id: str, now: float) -> None:
    """`sched` sends `w` task `task_id` to run: an echo of 1, within 5 s."""
    task = {"id": task_id, "driver": "echo", "model": None, "input": 1, "timeout": 5.0}
    w.receive(sched.node_id, wire({"t": "run", "tasks": [task]}), now)


def stored_of(run: JobRun) -> dict[str, StoredTask]:
    """What a store holds of `run`'s tasks: states, workers, prices, and each result (its
    output, as MessagePack, with its receipt)."""
    return {
        k: StoredTask(
            k,
            t.state.value,
            t.worker,
            t.price,
            t.attempts,
            t.error,
            t.since,
            encode(t.output) if t.receipt is not None else None,
            t.receipt,
            None,
        )
        for k, t in run.tasks.items()
    }
