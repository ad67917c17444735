"""Regaining a worker through the shells and a real gate on trio's fake clock: the gate goes
silent under a running task, the scheduler's Dispatcher dials the same relay address again,
and the task finishes once, with no attempt counted."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from functools import partial

import trio

from p2psched.gate.client import RelayClient, open_worker_channel
from p2psched.gate.service import Gate
from p2psched.identity import Identity
from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun, task_id_for
from p2psched.scheduler.service import Dispatcher
from p2psched.worker import manager as wm
from p2psched.worker.drivers import SleepDriver
from p2psched.worker.service import WorkerService
from tests.harness.net import nobody_at_fault, spec

S = TaskState


class Freezer(Gate):
    """A gate whose circuits carry nothing once `frozen` is set, and close nothing either: as
    if its host had vanished under them (no FIN, no RST). Circuits opened later work."""

    def __init__(self, identity: Identity) -> None:
        super().__init__(identity)
        self.frozen = trio.Event()

    async def _splice(
        self, a: trio.abc.Stream, b: trio.abc.Stream, cid: int, scope: trio.CancelScope
    ) -> None:
        if self.frozen.is_set():
            await super()._splice(a, b, cid, scope)
            return

        async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await src.receive_some(1 << 16):
                    if self.frozen.is_set():
                        await trio.sleep_forever()
                    await dst.send_all(data)
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, a, b)
            nursery.start_soon(pump, b, a)


async def test_a_gate_gone_silent_under_a_running_task_is_regained_through_the_shells(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The scheduler's Dispatcher hears nothing on a relayed link: it closes it, keeps the
    task the worker's, dials the same relay address again (the worker's ad never changed),
    and the task finishes once, on its first run, with no attempt counted."""
    scheduler, worker = Identity.generate(), Identity.generate()
    manager = wm.TaskManager(worker, slots=1, queue_depth=0)
    service = WorkerService(worker, manager, {"sleep": SleepDriver()}, clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        gate = Freezer(Identity.generate())
        gate_address = await nursery.start(gate.serve)
        await nursery.start(partial(service.serve, listen=False))
        address = await nursery.start(RelayClient(worker, [gate_address], service.handle).serve)
        profile = Profile(
            cpu_model="cpu",
            cpu_cores=4,
            ram_gb=8.0,
            drivers=("sleep",),
            free_slots=1,
            addresses=(address,),
        )
        worker_ad = WorkerAd(worker.node_id, profile, seq=1, expires=1e12)

        async def find(need: Need) -> list[WorkerAd]:
            return [worker_ad]

        dispatcher = Dispatcher(scheduler, find, open_worker_channel, clock=trio.current_time)
        await nursery.start(dispatcher.serve)
        nap = spec(0, driver="sleep", timeout=600.0)  # (the shell routes by the job in task ids)
        nap = replace(nap, task_id=task_id_for("job", 0), input={"seconds": 30})
        run = JobRun(scheduler, "job", [nap], mtr=0, now=trio.current_time(), rids=dispatcher.rids)
        done = dispatcher.add(run)
        t = run.tasks[nap.task_id]
        with trio.fail_after(20):
            while t.state != S.RUNNING:
                await trio.sleep(0.1)
        gate.frozen.set()
        with trio.fail_after(25):  # silence (5 s), then a dial again (5 s)
            while run.workers[worker.node_id].regain_by == math.inf:
                await trio.sleep(0.1)
        assert t.state == S.RUNNING and nobody_at_fault(t)
        with trio.fail_after(60):
            await done.wait()
        assert t.state == S.COMPLETED and t.worker == worker.node_id and nobody_at_fault(t)
        assert service.completed == 1
        assert gate.relay.counters["circuits_opened"] == 2  # the same address, dialed again
        nursery.cancel_scope.cancel()
