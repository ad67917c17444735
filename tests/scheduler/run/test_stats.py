"""What a job's run counts for the node's metrics, on a hand-driven clock: the deal, the
outcomes, the queue wait, and the workers' run times."""

from __future__ import annotations

import pytest

from p2psched.identity import Identity
from p2psched.scheduler.run import JobRun
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, spec


def test_a_jobs_stats_count_the_deal_the_outcomes_and_the_queue_wait() -> None:
    sched, workers = Identity.generate(), [Identity.generate() for _ in range(2)]
    run = JobRun(sched, "job", [spec(0, retries=1), spec(1, retries=1)], mtr=0, now=1000.0)
    net = Net(run, {w.node_id: wm.TaskManager(w, slots=2) for w in workers}, now=1003.0)
    net.hold = True
    run.add_workers([ad(w) for w in workers], net.now)  # found 3 s after it was queued
    net.pump()
    assert run.stats.queue_wait.count == 2 and run.stats.queue_wait.sum == pytest.approx(6.0)
    net.now += 2.5
    for wid, peer, task in net.started:  # the first fails (and is retried), the second runs
        error = "boom" if task["id"] == "job-000000" else None
        net.workers[wid].finished(peer, task["id"], "out", error, net.now)
    net.started = []
    net.pump()
    assert run.stats.outcomes == {"completed": 1, "retried": 1}
    ((wid, peer, task),) = net.started
    net.workers[wid].finished(peer, task["id"], None, "boom again", net.now)
    net.pump()
    assert run.done and run.stats.outcomes == {"completed": 1, "retried": 1, "failed": 1}
    deal = run.stats.negotiation
    assert deal["asked"] >= 1 and deal["quote"] >= 1
    assert deal["commit"] == deal["lease"] >= 2  # each commitment leased
    ran = [h for w in net.workers.values() for h in w.run_seconds.values()]
    assert sum(h.count for h in ran) == 3 and sum(h.sum for h in ran) == pytest.approx(5.0)
