"""The queue's order: earliest latest-start first, retries on top, a small job not starved by a
large one, and a cancel that empties the queue at once."""

from __future__ import annotations

from dataclasses import replace

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.queue import TaskQueue, latest_start, max_wait_s
from p2psched.scheduler.run import JobRun
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, spec

S = TaskState


def drain(q: TaskQueue) -> list[str]:
    return [q.pop()[3] for _ in range(len(q))]


def test_higher_priority_may_wait_less() -> None:
    waits = [max_wait_s(p) for p in range(10)]
    assert waits == sorted(waits, reverse=True)
    assert waits[0] == 3600.0 and waits[9] < 10


def test_the_task_due_first_is_served_first_and_retries_before_all() -> None:
    q = TaskQueue()
    q.push("late", latest_start(0.0, 5, 0), 0, retry=False)
    q.push("urgent", latest_start(10.0, 9, 0), 0, retry=False)  # later, but may wait 7 s
    q.push("retry", latest_start(50.0, 0, 3), 3, retry=True)
    assert drain(q) == ["retry", "urgent", "late"]


def test_a_deadline_brings_the_latest_start_forward() -> None:
    assert latest_start(0.0, 0, 0, deadline=100.0, run_s=30.0) == 70.0
    assert latest_start(0.0, 9, 0, deadline=1e6) == max_wait_s(9)


def test_a_small_job_is_due_before_most_of_a_large_one_submitted_earlier() -> None:
    q = TaskQueue()
    for i in range(100_000):
        q.push(f"big/{i}", latest_start(0.0, 5, i), i, retry=False)
    for i in range(10):
        q.push(f"small/{i}", latest_start(60.0, 5, i), i, retry=False)
    order = drain(q)
    last_small = max(order.index(f"small/{i}") for i in range(10))
    assert last_small < 7_000  # not behind all 100,000: aging by pace


def test_cancel_empties_the_queue_at_once() -> None:
    sched = Identity.generate()
    run = JobRun(sched, "job", [spec(k) for k in range(50)], mtr=0.0, now=0.0)
    assert len(run._queue) == 50
    assert len(run.cancel(None, 1.0)) == 50
    assert len(run._queue) == 0 and run.done
    assert set(run.counts()) == {"aborted"}


def test_a_task_that_failed_on_a_worker_goes_back_on_top_without_it() -> None:
    sched = Identity.generate()
    a, b = Identity.generate(), Identity.generate()
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=0) for i in (a, b)}
    tasks = [replace(spec(k), priority=9 if k == 0 else 0) for k in range(4)]
    run = JobRun(sched, "job", tasks, mtr=0.0, now=1000.0)
    net = Net(run, workers)
    net.hold = True
    run.add_workers([ad(a), ad(b)], net.now)
    net.pump()
    (w0, peer, task), *_ = [s for s in net.started if s[2]["id"] == "job-000000"]
    net.workers[w0].finished(peer, task["id"], None, "driver crashed", net.now)
    net.pump()
    t = run.tasks["job-000000"]
    assert t.attempts == 1 and w0 in t.excluded
    # Back on top: the next free slot (the other worker's) takes it before any first try.
    other = next(s for s in net.started if s[0] != w0)
    net.workers[other[0]].finished(other[1], other[2]["id"], "ok", None, net.now)
    net.advance(3)
    assert t.state in (S.SENT, S.RUNNING) and t.worker != w0
