"""Rebalancing between the real cores: tasks waiting in a slow worker's queue move to a
fast one that appears, whatever the MTR, and none that started is taken back."""

from __future__ import annotations

import math

import pytest

from p2psched.identity import Identity
from p2psched.scheduler.run import JobRun
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, spec


@pytest.mark.parametrize("mtr", [0.0, 1.0, math.inf])
def test_tasks_waiting_on_a_slow_worker_move_when_a_fast_one_appears(mtr: float) -> None:
    from p2psched.scheduler.predictor import Predictor

    sched, slow, fast = Identity.generate(), Identity.generate(), Identity.generate()
    predictor = Predictor()
    for _ in range(20):  # seen before: slow takes 10 s a task, fast 1 s
        predictor.observe(slow.node_id, None, 4, wait_s=0.0, run_s=10.0, now=0.0)
        predictor.observe(fast.node_id, None, 4, wait_s=0.0, run_s=1.0, now=0.0)
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=4) for i in (slow, fast)}
    run = JobRun(
        sched, "job", [spec(k) for k in range(5)], mtr=mtr, now=1000.0, predictor=predictor
    )
    net = Net(run, workers)
    net.hold = True
    run.add_workers([ad(slow)], net.now)  # only the slow one is known at first
    net.pump()
    assert {t.worker for t in run.tasks.values()} == {slow.node_id}  # 1 runs, 4 wait there
    run.add_workers([ad(fast)], net.now)
    net.advance(4)
    moved = [t for t in run.tasks.values() if t.worker == fast.node_id]
    assert len(moved) >= 3, [(t.state, t.worker == slow.node_id) for t in run.tasks.values()]
    assert all(t.attempts == 0 for t in run.tasks.values())  # a move is nobody's failure
    assert len(net.workers[slow.node_id]._queue) <= 1  # the cancels reached the slow one
    net.hold = False
    for wid, peer, task in net.started:
        if (peer, task["id"]) in net.workers[wid]._held:
            net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
    net.pump()
    for _ in range(20):
        if run.done:
            break
        net.advance(1)
    assert run.done and run.counts() == {"completed": 5}
    assert sorted(net.settled) == sorted(run.tasks)
    # Only tasks that had not started moved: none started twice.
    started = [task["id"] for _, _, task in net.started]
    assert len(started) == len(set(started))
