"""The budget is never exceeded: whatever the prices, the failures and the strategy, money
spent plus money held never goes over the job's budget, at every step, with many workers
quoting and taking commitments at once; held money returns to zero when nothing is in
flight; and what no one can be paid for fails, saying so."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psched.identity import Identity
from p2psched.resources.detect import Device
from p2psched.resources.profile import Gpu
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import MONEY_EPSILON, JobRun
from p2psched.scheduler.strategy import STRATEGIES, Strategy
from p2psched.worker import manager as wm
from p2psched.worker.devices import Devices
from tests.harness.net import Net, ad, make_net, spec

S = TaskState


def test_budget_is_never_exceeded() -> None:
    net = make_net(10, 2, prices=[1.0, 1.0], budget=3.5)
    assert net.run.spent <= 3.5
    assert net.run.counts()["completed"] == 3
    net.advance(40)  # nobody can be paid for the rest: they fail with the reason
    assert net.run.done and net.run.counts()["failed"] == 7


def test_budget_edge_with_prices_that_do_not_add_up_exactly() -> None:
    net = make_net(10, 1, prices=[0.1], budget=0.35)
    net.advance(60)
    assert net.run.done
    assert net.run.counts() == {"completed": 3, "failed": 7}
    failed = [t for t in net.run.tasks.values() if t.state == S.FAILED]
    assert all("budget is spent" in (t.error or "") for t in failed)


IDS = [Identity.generate() for _ in range(8)]  # signing keys are slow to make: shared
SCHED = Identity.generate()


class CheckedNet(Net):
    """Checks the budget after every step of the cores."""

    def pump(self, rounds: int = 10_000) -> None:
        super().pump(rounds)
        run = self.run
        assert run.spent + run.held <= run.budget + MONEY_EPSILON, (run.spent, run.held)
        assert run.held >= -MONEY_EPSILON


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    prices=st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0]), min_size=2, max_size=8),
    budget=st.floats(0.0, 30.0),
    n_tasks=st.integers(1, 40),
    failure=st.floats(0.0, 0.5),
    strategy=st.sampled_from(STRATEGIES),
    seed=st.integers(0, 2**16),
)
def test_spent_plus_held_never_exceeds_the_budget(
    prices: list[float], budget: float, n_tasks: int, failure: float, strategy: str, seed: int
) -> None:
    rng = random.Random(seed)
    ids = IDS[: len(prices)]
    workers = {
        i.node_id: wm.TaskManager(i, slots=2, queue_depth=2, price=p) for i, p in zip(ids, prices)
    }
    run = JobRun(
        SCHED,
        "job",
        [spec(k, retries=1) for k in range(n_tasks)],
        mtr=0.5,
        budget=budget,
        now=1000.0,
        strategy=Strategy(strategy, seed=seed),
    )
    net = CheckedNet(run, workers)
    net.hold = True  # tasks pile up on workers: many commitments outstanding at once
    run.add_workers([ad(i, p) for i, p in zip(ids, prices)], net.now)
    net.pump()
    for _ in range(200):
        if run.done:
            break
        held, net.started = net.started, []
        for wid, peer, task in held:
            if wid not in net.up:
                continue
            if rng.random() < failure:
                net.workers[wid].finished(peer, task["id"], None, "driver crashed", net.now)
            else:
                net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
        net.pump()
        net.advance(1)
    net.advance(40)  # what no one can be paid for fails, saying so
    assert run.done
    assert run.spent <= budget + MONEY_EPSILON
    assert abs(run.held) <= MONEY_EPSILON  # every hold was charged or released
    paid = sum(t.receipt.price for t in run.tasks.values() if t.receipt and t.receipt.ok)
    assert math.isclose(paid, run.spent, abs_tol=1e-9)
    completed = run.counts().get("completed", 0)
    cheapest = min(prices)
    if cheapest > 0:
        assert completed <= budget / cheapest + 1e-9


def gpu_net(n_tasks: int, *, budget: float = math.inf, max_price: float = math.inf) -> Net:
    """`n_tasks` tasks needing 4 GPUs each, on one 4-GPU, 4-slot worker at 1.0 a slot."""
    sched, wid = Identity.generate(), Identity.generate()
    four = Devices(tuple(Device(i, f"GPU-{i}") for i in range(4)))
    workers = {wid.node_id: wm.TaskManager(wid, slots=4, price=1.0, devices=four)}
    tasks = [spec(k, need="gpus>=4", max_price=max_price) for k in range(n_tasks)]
    run = JobRun(sched, "job", tasks, mtr=0.0, budget=budget, now=1000.0)
    net = Net(run, workers)
    a = ad(wid, 1.0)
    gpus = (Gpu("NVIDIA L4", 22.5),) * 4
    run.add_workers([replace(a, profile=replace(a.profile, gpus=gpus, free_slots=4))], net.now)
    net.pump()
    return net


def test_a_task_taking_every_gpu_is_paid_and_limited_at_every_slots_price() -> None:
    # Four slots' price each (all four GPUs): a budget of 8 pays for two of three.
    net = gpu_net(3, budget=8.0)
    net.advance(60)
    assert net.run.counts() == {"completed": 2, "failed": 1}
    assert [t.receipt.price for t in net.run.tasks.values() if t.receipt] == [4.0, 4.0]
    assert net.run.spent == 8.0
    # A limit of 3 a task is below what the four GPUs cost: nothing is placed.
    net = gpu_net(1, max_price=3.0)
    net.advance(60)
    [t] = net.run.tasks.values()
    assert t.state == S.FAILED and t.receipt is None and not net.started
    assert "asks 4, offered at most 3" in (t.error or "")
