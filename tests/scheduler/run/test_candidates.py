"""Which workers a job's tasks may take, between the real cores: the cheapest at MTR 0
(waiting for it, unless a deadline or its silence says otherwise), what the node learned of
a worker over what it claims, a worker that keeps failing skipped, and kinds of task that
do not hold each other up."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, commit, dispatch, make_net, spec

S = TaskState


def test_mtr_zero_prefers_the_cheapest_worker() -> None:
    net = make_net(4, 3, prices=[0.3, 0.1, 0.2])
    cheapest = [w for w, m in net.workers.items() if m.price == 0.1][0]
    assert [t.worker for t in net.run.tasks.values()] == [cheapest] * 4  # it had room for 4
    assert net.run.spent == pytest.approx(0.4)


def test_a_long_queue_of_one_waiting_kind_does_not_starve_another_kind() -> None:
    net = make_net(0, 0)
    busy, free = Identity.generate(), Identity.generate()
    net.workers = {
        busy.node_id: wm.TaskManager(busy, slots=1, queue_depth=0),
        free.node_id: wm.TaskManager(free),
    }
    other = Identity.generate()
    w = net.workers[busy.node_id]
    w.connected(other.node_id, other.public_key, net.now)
    commit(w, other, "theirs", net.now)  # its only slot belongs to another scheduler
    dispatch(w, other, "theirs", net.now)
    w.actions()
    naps = [spec(k, driver="sleep", need="driver=sleep") for k in range(300)]
    echo = [spec(300, need="driver=echo")]
    net.run = JobRun(net.run.identity, "job", naps + echo, mtr=0, now=net.now)
    net.run.add_workers([ad(busy, drivers=("sleep",)), ad(free, drivers=("echo",))], net.now)
    net.pump()
    net.advance(5)
    assert net.run.tasks["job-000300"].state == S.COMPLETED


def test_what_the_node_learned_of_a_worker_outweighs_its_claim() -> None:
    from p2psched.scheduler.predictor import Predictor

    sched = Identity.generate()
    fast, slow = Identity.generate(), Identity.generate()
    predictor = Predictor()
    size = len(b"\x81\xa1n\x00")  # {"n": 0} encoded: the bucket the tasks fall in
    for _ in range(20):  # both claim nothing; this node saw `slow` take 10x as long
        predictor.observe(fast.node_id, None, size, wait_s=0.0, run_s=1.0, now=0.0)
        predictor.observe(slow.node_id, None, size, wait_s=0.0, run_s=10.0, now=0.0)
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=3) for i in (slow, fast)}
    run = JobRun(sched, "job", [spec(0)], mtr=math.inf, now=1000.0, predictor=predictor)
    net = Net(run, workers)
    run.add_workers([ad(slow), ad(fast)], net.now)
    net.pump()
    assert run.done and run.tasks["job-000000"].worker == fast.node_id


@pytest.mark.parametrize(("output", "expected"), [(1000, "steady"), (10, "quick")])
def test_a_task_that_tells_its_tokens_goes_where_the_token_fit_expects_it_done_first(
    output: int, expected: str
) -> None:
    """`steady` starts slowly and decodes fast, `quick` the reverse; by input size (the same
    for every task) `steady` is the faster on average, so only the fit on the tokens a task
    tells sends a short answer to `quick`."""
    from dataclasses import replace

    from p2psched.scheduler.estimate import Tokens
    from p2psched.scheduler.predictor import Predictor

    sched = Identity.generate()
    workers = {"steady": Identity.generate(), "quick": Identity.generate()}
    predictor = Predictor()
    size = len(b"\x81\xa1n\x00")
    for out in range(0, 1000, 50):
        told = Tokens(10, out)
        for name, run_s in (("steady", 2.0 + 0.001 * out), ("quick", 0.1 + 0.01 * out)):
            node = workers[name].node_id
            predictor.observe(node, None, size, wait_s=0.0, run_s=run_s, now=0.0, tokens=told)
    task = replace(spec(0), tokens=Tokens(10, output))
    managers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=3) for i in workers.values()}
    run = JobRun(sched, "job", [task], mtr=math.inf, now=1000.0, predictor=predictor)
    net = Net(run, managers)
    run.add_workers([ad(i) for i in workers.values()], net.now)
    net.pump()
    assert run.done and run.tasks["job-000000"].worker == workers[expected].node_id


def test_a_worker_that_keeps_failing_is_skipped() -> None:
    from p2psched.scheduler.worker_views import WorkerViews

    views = WorkerViews()
    sched = Identity.generate()
    bad, good = Identity.generate(), Identity.generate()
    for i in range(3):
        views.failed(bad.node_id, f"old/{i}", "driver crashed", now=999.0)
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=3) for i in (bad, good)}
    run = JobRun(sched, "job", [spec(k) for k in range(6)], mtr=0.0, now=1000.0, views=views)
    net = Net(run, workers)
    run.add_workers([ad(bad, price=0.0), ad(good, price=5.0)], net.now)  # bad is cheaper
    for _ in range(10):
        net.pump()
        if run.done:
            break
        net.advance(1)
    assert run.done and {t.worker for t in run.tasks.values()} == {good.node_id}


def test_mtr_zero_with_a_deadline_takes_the_cheapest_workers_that_make_it() -> None:
    from p2psched.scheduler.predictor import Predictor

    sched, cheap, fast = Identity.generate(), Identity.generate(), Identity.generate()
    predictor = Predictor()
    for _ in range(20):  # seen before: cheap takes 10 s a task, fast 1 s
        predictor.observe(cheap.node_id, None, 4, wait_s=0.0, run_s=10.0, now=0.0)
        predictor.observe(fast.node_id, None, 4, wait_s=0.0, run_s=1.0, now=0.0)
    workers = {
        cheap.node_id: wm.TaskManager(cheap, slots=1, queue_depth=4, price=1.0),
        fast.node_id: wm.TaskManager(fast, slots=1, queue_depth=4, price=5.0),
    }
    run = JobRun(
        sched,
        "job",
        [spec(k) for k in range(6)],
        mtr=0.0,
        now=1000.0,
        # cheap would finish two by then (at 10 s and 20 s, 30 s with the 1.5 margin), not a
        # third (30 s, 45 s with the margin)
        deadline=1031.0,
        predictor=predictor,
    )
    net = Net(run, workers)
    net.hold = True
    run.add_workers([ad(cheap, 1.0), ad(fast, 5.0)], net.now)
    net.pump()
    placed = Counter(t.worker for t in run.tasks.values())
    assert placed == {cheap.node_id: 2, fast.node_id: 4}


def test_mtr_zero_without_a_deadline_waits_for_the_cheapest() -> None:
    sched, cheap, dear = Identity.generate(), Identity.generate(), Identity.generate()
    workers = {
        cheap.node_id: wm.TaskManager(cheap, slots=1, queue_depth=1, price=1.0),
        dear.node_id: wm.TaskManager(dear, slots=4, queue_depth=4, price=1.5),
    }
    run = JobRun(sched, "job", [spec(k) for k in range(6)], mtr=0.0, now=1000.0)
    net = Net(run, workers)
    net.hold = True
    run.add_workers([ad(cheap, 1.0), ad(dear, 1.5)], net.now)
    net.pump()
    # Two fit on the cheap one now; the others wait for it rather than pay 1.5.
    assert Counter(t.worker for t in run.tasks.values()) == {cheap.node_id: 2, None: 4}


def test_mtr_zero_stops_waiting_for_a_cheapest_worker_that_stopped_answering() -> None:
    sched, silent, ok = Identity.generate(), Identity.generate(), Identity.generate()
    workers = {
        silent.node_id: wm.TaskManager(silent, price=0.1),
        ok.node_id: wm.TaskManager(ok, price=0.5),
    }
    run = JobRun(sched, "job", [spec(k) for k in range(3)], mtr=0.0, now=1000.0)
    net = Net(run, workers)
    # The cheap one is connected but never answers a quote request.
    net.behave[silent.node_id] = lambda m: (
        {"t": "beat", "running": [], "progress": []} if m["t"] == "quote" else m
    )
    run.add_workers([ad(silent, 0.1), ad(ok, 0.5)], net.now)
    net.pump()
    net.advance(30, step=1.0)
    assert run.done and run.counts() == {"completed": 3}
    assert {t.worker for t in run.tasks.values()} == {ok.node_id}
