"""The worker's shell over real channels on loopback: what a scheduler's channel takes before
and after the scheduler has said what it is, and what it is told when it sends more; short
results of one scheduler's signed as one batch."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from p2psched.identity import Identity
from p2psched.wire.channel import SecureChannel, open_channel
from p2psched.wire.deal import MAX_OPENING_MESSAGE, Commitment, Receipt, task_id_for
from p2psched.wire.messages import Ack, Commit, QuoteRequest, Task, encode, raw
from p2psched.wire.noise import ChannelError
from p2psched.worker.drivers import EchoDriver
from p2psched.worker.manager import TaskManager
from p2psched.worker.policy import SchedulerPolicy, Terms
from p2psched.worker.service import WorkerService

ASK = encode(QuoteRequest(1, "job", 1, "echo", None, 1.0))
# A message a scheduler may send (acknowledging results), larger than a stranger may send.
BIG_ACK = encode(Ack([f"job/{i}" for i in range(MAX_OPENING_MESSAGE // 6)]))


@asynccontextmanager
async def serving(
    terms: Terms | None = None, slots: int = 1, clock: Callable[[], float] = time.time
) -> AsyncIterator[tuple[Identity, tuple[str, int]]]:
    worker = Identity.generate()
    manager = TaskManager(worker, slots=slots, terms=terms or Terms())
    service = WorkerService(worker, manager, {"echo": EchoDriver()}, clock=clock)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(service.serve)
        yield worker, address
        nursery.cancel_scope.cancel()


async def heard_until(channel: SecureChannel, kind: str) -> list[Any]:
    """What the worker says on `channel` up to its first message of `kind` (the messages
    so far, that one last); all it said if it hangs up first."""
    heard: list[Any] = []
    with trio.fail_after(10):
        try:
            while not heard or heard[-1]["t"] != kind:
                heard.append(await channel.receive())
        except ChannelError:
            pass
    return heard


async def test_a_stranger_opening_with_more_than_a_few_kib_is_told_why_and_dropped() -> None:
    assert len(BIG_ACK) > MAX_OPENING_MESSAGE
    async with serving() as (worker, (host, port)):
        async with open_channel(
            host, port, Identity.generate(), expected_peer=worker.node_id
        ) as ch:
            await heard_until(ch, "beat")  # (its channel is up: it hears what comes next)
            await ch.send_encoded([BIG_ACK])
            heard = await heard_until(ch, "error")
        assert heard and heard[-1]["t"] == "error", heard
        assert f"over the {MAX_OPENING_MESSAGE}-byte limit" in heard[-1]["reason"]
        # Once it has said what it is (a quote request), a scheduler may send that much.
        async with open_channel(
            host, port, Identity.generate(), expected_peer=worker.node_id
        ) as ch:
            await ch.send_encoded([ASK])
            assert (await heard_until(ch, "quote"))[-1]["t"] == "quote"
            await ch.send_encoded([BIG_ACK, ASK])
            assert [m["t"] for m in await heard_until(ch, "quote")] == ["quote"]


async def test_a_scheduler_it_owes_a_result_may_open_with_more() -> None:
    """A scheduler that went away before it acknowledged a result said what it is on its
    earlier channel: on its next one, the result comes again, and its first message may be
    large (here, its acknowledgements)."""
    me = Identity.generate()
    async with serving() as (worker, (host, port)):
        task = task_id_for("job", 0)
        async with open_channel(host, port, me, expected_peer=worker.node_id) as ch:
            await ch.send_encoded([ASK])
            quote = (await heard_until(ch, "quote"))[-1]["quote"]
            commitment = Commitment(
                me.node_id, worker.node_id, "job", [task], quote["price"], time.time()
            ).signed(me)
            run = [Task(task, "echo", None, raw({"n": 1}), 60.0)]
            await ch.send_encoded([encode(Commit(2, commitment, run))])
            assert (await heard_until(ch, "result"))[-1]["output"] == {"n": 1}
        async with open_channel(host, port, me, expected_peer=worker.node_id) as ch:
            heard = await heard_until(ch, "beat")
            assert [(m["t"], m.get("task")) for m in heard] == [("result", task), ("beat", None)]
            await ch.send_encoded([BIG_ACK, ASK])
            assert [m["t"] for m in await heard_until(ch, "quote")] == ["quote"]


async def test_results_that_end_together_come_signed_once_as_a_batch() -> None:
    """Four short tasks started at once: the results of the first three wait for the last,
    and the four receipts come under one signature, each provable on its own. (The worker's
    clock stands still: however loaded the machine, each task took no time.)"""
    me = Identity.generate()
    async with serving(slots=4, clock=lambda: 1000.0) as (worker, (host, port)):
        tasks = [task_id_for("job", i) for i in range(4)]
        async with open_channel(host, port, me, expected_peer=worker.node_id) as ch:
            await ch.send_encoded([ASK])
            quote = (await heard_until(ch, "quote"))[-1]["quote"]
            commitment = Commitment(
                me.node_id, worker.node_id, "job", tasks, quote["price"], time.time()
            ).signed(me)
            run = [Task(t, "echo", None, raw(i), 60.0) for i, t in enumerate(tasks)]
            await ch.send_encoded([encode(Commit(2, commitment, run))])
            heard: list[Any] = []
            while len(heard) < len(tasks):
                heard += [m for m in await heard_until(ch, "result") if m["t"] == "result"]
    receipts = [Receipt.from_wire(m["receipt"], "receipt") for m in heard]
    assert sorted(r.task for r in receipts) == tasks
    assert len({r.sig for r in receipts}) == 1
    assert sorted(r.batch.index for r in receipts if r.batch) == [0, 1, 2, 3]
    assert all(r.verify(worker.public_key) for r in receipts)


async def test_a_scheduler_its_operator_refuses_never_gets_more_than_a_few_kib() -> None:
    """Asking for a quote says what a peer is, but a scheduler the operator denies (or does
    not allow) is declined whatever it says: its channel stays at a stranger's limit, so it
    cannot make the worker buffer a commitment's worth of bytes it would refuse anyway."""
    denied, outsider = Identity.generate(), Identity.generate()
    for policy, who in (
        (SchedulerPolicy(deny=frozenset({denied.node_id})), denied),
        (SchedulerPolicy(only_allowed=True), outsider),
    ):
        async with serving(Terms(policy=policy)) as (worker, (host, port)):
            async with open_channel(host, port, who, expected_peer=worker.node_id) as ch:
                await ch.send_encoded([ASK])
                assert (await heard_until(ch, "decline"))[-1]["t"] == "decline"
                await ch.send_encoded([BIG_ACK])
                heard = await heard_until(ch, "error")
            assert heard and heard[-1]["t"] == "error", heard
            assert f"over the {MAX_OPENING_MESSAGE}-byte limit" in heard[-1]["reason"]
