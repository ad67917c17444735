"""A worker that sends the scheduler what no honest worker sends, over a real channel: the
scheduler's node drops that worker, says why in a few bounded words, and goes on serving."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import msgpack
import pytest
import trio

from p2psched.gate.client import open_worker_channel
from p2psched.identity import Identity
from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun, Link, task_id_for
from p2psched.scheduler.service import Dispatcher
from p2psched.wire.channel import SecureChannel, serve_channels
from p2psched.worker.drivers import DriverError, DriverTask, EchoDriver
from p2psched.worker.manager import TaskManager
from p2psched.worker.service import WorkerService
from tests.harness.hostile import take_commitment
from tests.harness.net import spec

DEEP = b"\x91" * 5000 + b"\xc0"  # a list in a list ... 5,000 deep: msgpack and msgspec recurse


def nested_result() -> bytes:
    """A result whose output nests 5,000 deep (the old decoder refused more than 1,024)."""
    head = msgpack.packb({"t": "result", "task": "job/0"})
    rest = msgpack.packb({"error": None, "receipt": {}})
    return b"\x85" + head[1:] + msgpack.packb("output") + DEEP + rest[1:]


def long_unknown_field() -> bytes:
    """A heartbeat with one more field, whose name is a megabyte and forges a log line."""
    name = "x" * (1 << 20) + "\n2026-12-07 INFO all is well"
    return msgpack.packb({"t": "beat", "running": [], "progress": [], name: 1})


async def scheduling(
    nursery: trio.Nursery,
    scheduler: Identity,
    worker: Identity,
    address: tuple[str, int],
    drivers: tuple[str, ...],
) -> Dispatcher:
    """A Dispatcher for `scheduler`, serving in `nursery`, whose DHT finds just `worker`, at
    `address`, with these drivers and two slots."""
    profile = Profile(
        cpu_model="cpu",
        cpu_cores=4,
        ram_gb=8.0,
        drivers=drivers,
        free_slots=2,
        addresses=(f"{address[0]}:{address[1]}",),
    )
    ad = WorkerAd(worker.node_id, profile, seq=1, expires=1e12)

    async def find(need: Need) -> list[WorkerAd]:
        return [ad]

    dispatcher = Dispatcher(scheduler, find, open_worker_channel)
    await nursery.start(dispatcher.serve)
    return dispatcher


async def dealing_with(
    nursery: trio.Nursery,
    scheduler: Identity,
    rogue: Identity,
    hostile: Callable[[SecureChannel], Awaitable[None]],
) -> tuple[Dispatcher, JobRun]:
    """`scheduler`'s Dispatcher, with a job of one echo task added, and `rogue` serving its
    channels with `hostile`: the only worker it finds."""
    address = await nursery.start(serve_channels, rogue, hostile)
    dispatcher = await scheduling(nursery, scheduler, rogue, address, ("echo",))
    task = replace(spec(0), task_id=task_id_for("job", 0))
    run = JobRun(scheduler, "job", [task], mtr=0, now=trio.current_time(), rids=dispatcher.rids)
    dispatcher.add(run)
    return dispatcher, run


async def drop_on(frame: bytes) -> tuple[str, bool]:
    """What the job says of a worker that sent `frame` once committed to, and whether the
    node still serves (a second job on it is accepted and cancelled cleanly)."""
    scheduler, rogue = Identity.generate(), Identity.generate()

    async def hostile(channel: SecureChannel) -> None:
        await take_commitment(channel, rogue)
        await channel.send_encoded([frame])
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        dispatcher, run = await dealing_with(nursery, scheduler, rogue, hostile)
        with trio.fail_after(20):
            while (w := run.workers.get(rogue.node_id)) is None or w.link != Link.DOWN:
                await trio.sleep(0.01)
        reason = w.declined or ""
        # The node goes on: another job is taken, and ends when cancelled.
        other = replace(spec(0), task_id=task_id_for("other", 0))
        second = JobRun(scheduler, "other", [other], mtr=0, now=trio.current_time())
        done = dispatcher.add(second)
        aborted = dispatcher.cancel("other", None)
        with trio.fail_after(10):
            await done.wait()
        serving = aborted == [other.task_id] and second.tasks[other.task_id].state == (
            TaskState.ABORTED
        )
        nursery.cancel_scope.cancel()
    return reason, serving


async def test_a_result_nested_thousands_deep_drops_the_worker_not_the_node() -> None:
    reason, serving = await drop_on(nested_result())
    assert "nested too deep" in reason
    assert serving


async def test_a_field_name_chosen_by_the_worker_is_not_echoed_at_length() -> None:
    reason, serving = await drop_on(long_unknown_field())
    assert "unknown field" in reason and "\n" not in reason
    assert len(reason) < 300, len(reason)
    assert serving


async def test_one_malformed_result_fails_that_task_and_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that puts a reason longer than the wire allows into one result (as workers
    before the cut at the source did): that task fails there; the link stays, and the
    worker's other task completes."""
    from p2psched.worker import receipts

    monkeypatch.setattr(receipts, "said", lambda reason: reason)  # no cut: 400 chars

    class Failing:
        name = "fail"
        uses_scratch = False

        async def run(self, task: DriverTask, progress: Callable[[float], None]) -> Any:
            raise DriverError("exit code 1: " + "x" * 380)

    scheduler, worker = Identity.generate(), Identity.generate()
    manager = TaskManager(worker, slots=2)
    service = WorkerService(worker, manager, {"fail": Failing(), "echo": EchoDriver()})
    async with trio.open_nursery() as nursery:
        address = await nursery.start(service.serve)
        dispatcher = await scheduling(nursery, scheduler, worker, address, ("echo", "fail"))
        bad = replace(spec(0, driver="fail", retries=0), task_id=task_id_for("job", 0))
        good = replace(spec(1), task_id=task_id_for("job", 1))
        run = JobRun(
            scheduler, "job", [bad, good], mtr=0, now=trio.current_time(), rids=dispatcher.rids
        )
        done = dispatcher.add(run)
        with trio.fail_after(30):
            await done.wait()
        assert run.tasks[bad.task_id].state == TaskState.FAILED
        assert "malformed result" in (run.tasks[bad.task_id].error or "")
        assert run.tasks[good.task_id].state == TaskState.COMPLETED
        assert not run.workers[worker.node_id].banned
        nursery.cancel_scope.cancel()


async def test_a_result_held_half_sent_draws_on_the_schedulers_budget() -> None:
    """A worker committed to sends all but the end of a 2 MiB result and holds it there: the
    link reads it only with room in the node's budget of large messages, so many such workers
    cannot make the scheduler hold one result each."""
    scheduler, rogue = Identity.generate(), Identity.generate()
    size = 2 << 20

    async def hostile(channel: SecureChannel) -> None:
        await take_commitment(channel, rogue)
        channel._session.seal(b"\xc6" + (size - 5).to_bytes(4, "big") + bytes(size - 5))
        await channel._stream.send_all(channel._session.data_to_send()[:-1000])
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        dispatcher, run = await dealing_with(nursery, scheduler, rogue, hostile)
        with trio.fail_after(20):
            while dispatcher.frame_budget.held < size:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert dispatcher.frame_budget.held == 0  # given back when the link closed
