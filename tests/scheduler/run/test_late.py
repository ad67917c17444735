"""Late binding (reserve places in workers' queues, bind a task when a worker says it is
ready), through its own reserve/ready protocol between the real cores."""

from __future__ import annotations

import math
from dataclasses import replace

from p2psched.identity import Identity
from p2psched.resources.detect import Device
from p2psched.resources.profile import Gpu
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun, Send
from p2psched.scheduler.strategy import Strategy
from p2psched.worker import manager as wm
from p2psched.worker.devices import Devices
from tests.harness.net import Net, ad, net_with, on_wire, spec, wire

S = TaskState


def test_late_binding_reserves_d_places_per_task_and_binds_on_ready() -> None:
    net = net_with("late_binding", 3, 8, slots=1)
    net.hold = True  # tasks start and stay running
    net.pump()
    # Six places asked for three tasks, one or two per worker; each task went to a worker
    # that said it was ready, and the places left over were given up.
    assert {t.state for t in net.run.tasks.values()} == {S.SENT}
    busy = {wid for wid, _, _ in net.started}
    assert len(busy) == 3
    assert net.run._reserved == 0
    for w in net.workers.values():
        assert not w._reserved and not w._pulling  # nothing left held on any worker


def test_late_binding_sends_the_task_to_whoever_is_free_first() -> None:
    net = net_with("late_binding", 4, 2, slots=1)
    net.hold = True
    net.pump()
    running = [wid for wid, _, _ in net.started]
    assert len(running) == 2 and len(set(running)) == 2
    first, peer, task = net.started[0]
    # The first worker finishes: it asks for the next task and gets it; the other is busy.
    net.workers[first].finished(peer, task["id"], "ok", None, net.now)
    net.pump()
    assert [wid for wid, _, _ in net.started[2:]] == [first]


def test_switching_strategy_mid_job_gives_up_reservations_and_finishes() -> None:
    net = net_with("late_binding", 40, 3, slots=1)
    net.hold = True
    net.pump()
    assert net.run._reserved > 0
    net.run.strategy.set("cost")
    net.hold = False
    for wid, peer, task in net.started:
        net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
    net.started = []
    net.pump()
    for _ in range(30):
        if net.run.done:
            break
        net.advance(1)
    assert net.run.done and net.run.counts() == {"completed": 40}
    assert net.run._reserved == 0
    assert all(not w._reserved for w in net.workers.values())


def test_a_ready_for_places_given_up_is_answered_with_unreserve() -> None:
    net = net_with("late_binding", 1, 1, slots=1)
    net.pump()
    assert net.run.done
    wid = next(iter(net.workers))
    net.run.receive(wid, wire({"t": "ready", "rid": 999_999, "price": 0.0, "gpus": 0}), net.now)
    out = [a for a in net.run.actions() if isinstance(a, Send)]
    assert out and on_wire(out[-1].message) == {"t": "unreserve", "rid": 999_999}


def late_net(
    n_tasks: int,
    *,
    slots: int = 1,
    price: float = 0.0,
    budget: float = math.inf,
    gpus: int = 0,
    **task: object,
) -> Net:
    """`n_tasks` tasks placed by late binding on one worker of `slots` slots and `gpus` GPUs,
    at `price` a slot."""
    sched, wid = Identity.generate(), Identity.generate()
    devices = Devices(tuple(Device(i, f"GPU-{i}") for i in range(gpus)))
    workers = {
        wid.node_id: wm.TaskManager(wid, slots=slots, queue_depth=2, price=price, devices=devices)
    }
    run = JobRun(
        sched,
        "job",
        [spec(k, **task) for k in range(n_tasks)],  # type: ignore[arg-type]
        mtr=1.0,
        budget=budget,
        now=1000.0,
        strategy=Strategy("late_binding", seed=1),
    )
    net = Net(run, workers)
    a = ad(wid, price)
    profile = replace(a.profile, free_slots=slots, gpus=(Gpu("NVIDIA L4", 22.5),) * gpus)
    run.add_workers([replace(a, profile=profile)], net.now)
    return net


def test_late_binding_pays_for_the_slots_a_tasks_gpus_take_as_its_ready_says() -> None:
    # Two GPUs of a 4-GPU, 4-slot worker at 1.0 a slot: 2.0 a task, within the limit.
    net = late_net(2, slots=4, price=1.0, gpus=4, need="gpus>=2", max_price=2.0)
    net.advance(30)
    assert net.run.counts() == {"completed": 2}
    assert [t.receipt.price for t in net.run.tasks.values() if t.receipt] == [2.0, 2.0]
    # Over the limit: the worker declines the places, and the task fails saying why.
    net = late_net(1, slots=4, price=1.0, gpus=4, need="gpus>=2", max_price=1.5)
    net.advance(200)
    [t] = net.run.tasks.values()
    assert not net.started and t.state == S.FAILED
    assert "price below its minimum: asks 2, offered at most 1.5" in (t.error or "")


def test_late_binding_backs_off_a_worker_nothing_queued_may_use() -> None:
    # The only worker failed the task once: it is excluded, and must not be offered places
    # over and over (a loop with no time passing).
    net = late_net(1, retries=3)
    net.hold = True
    net.pump()
    w, peer, task = net.started[0]
    net.workers[w].finished(peer, task["id"], None, "driver crashed", net.now)
    net.pump(rounds=200)  # quiescent: raises if it loops
    assert net.run.tasks["job-000000"].state == S.QUEUED
    # Nor when the budget allows one task at a time on a worker with two slots.
    net = late_net(2, slots=2, price=1.0, budget=1.0)
    net.hold = True
    net.pump(rounds=200)
    assert net.run.counts() == {"sent": 1, "queued": 1}


def test_late_binding_asks_a_big_worker_for_no_more_places_than_it_holds() -> None:
    net = late_net(40, slots=100)
    net.pump()
    for _ in range(5):
        net.advance(1)
    assert net.run.done and net.run.counts() == {"completed": 40}
