"""`JobRun.restore` between the real cores: what a restarted scheduler takes up from its store."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun, Spooled
from p2psched.store import StoredTask
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, make_net, spec, stored_of

S = TaskState


snapshot = stored_of


def restarted(
    net: Net, n: int, stored: dict[str, StoredTask] | None = None, **task: object
) -> JobRun:
    """The same scheduler, a new process: the job rebuilt from its spec and its store (as
    `stored`, or as the run left it)."""
    stored = stored or snapshot(net.run)
    run = JobRun(
        net.run.identity,
        "job",
        [spec(k, **task) for k in range(n)],  # type: ignore[arg-type]
        mtr=0.0,
        now=net.now,
        durable=True,
    )
    run.journal.clear()
    run.restore(stored, lambda w: ("127.0.0.1:1",), net.now)
    net.run = run
    return run


def test_a_queued_retry_keeps_its_attempts_across_a_restart() -> None:
    sched = Identity.generate()
    run = JobRun(sched, "job", [spec(0, retries=1)], mtr=0.0, now=0.0)
    stored = {"job-000000": StoredTask("job-000000", "queued", None, 0.0, 1, "boom", 0.0)}
    run.restore(stored, lambda w: (), 1.0)
    t = run.tasks["job-000000"]
    assert t.attempts == 1 and t.error == "boom" and t.retry


def test_restart_keeps_the_done_and_takes_back_what_the_worker_dropped() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=2, queue_depth=2)}
    net.run = JobRun(net.run.identity, "job", [spec(k) for k in range(6)], mtr=0.0, now=net.now)
    net.hold = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    # Two run, two wait in the worker's queue; one finishes: it is completed here (once its
    # result stops waiting for the others' to share a signature).
    running = list(net.started)
    assert len(running) == 2
    wid, peer, task = running[0]
    net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
    net.advance(0.01, step=0.01)
    done_before = {k for k, t in net.run.tasks.items() if t.state == S.COMPLETED}
    assert len(done_before) == 1
    # The scheduler dies without the worker noticing (no reset); the second running task
    # finishes meanwhile and waits for it.
    wid, peer, task = running[1]
    net.up.discard(wid)  # the scheduler is gone; the worker has not noticed
    net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
    net.pump()  # its result goes nowhere; the next in its queue starts
    run = restarted(net, 6)
    net.pump()  # reconnect: the kept result arrives; the first beat shows the queue went
    assert {k for k, t in run.tasks.items() if t.state == S.COMPLETED} == done_before | {task["id"]}
    assert all(t.attempts == 0 for t in run.tasks.values())  # nobody's fault
    net.hold = False
    for wid, peer, task in net.started[2:]:
        net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
    net.pump()
    for _ in range(10):
        if run.done:
            break
        net.advance(1)
    assert run.done and run.counts() == {"completed": 6}, (
        run.counts(),
        [(t.state, t.error) for t in run.tasks.values()],
    )
    # Each settled once over both lives of the scheduler, and none started twice on the
    # worker (those it had queued when the scheduler went were dropped before they started).
    assert sorted(net.settled) == sorted(run.tasks)
    starts = Counter(task["id"] for _, _, task in net.started)
    assert all(n == 1 for n in starts.values()), starts


def test_a_relayed_worker_a_restarted_scheduler_cannot_dial_is_waited_for_not_lost() -> None:
    """Its gate may have changed while we were down: the stored relay address fails, and its
    fresh ad (another gate) brings it back, its tasks still its."""
    from p2psched.resources.profile import Profile
    from p2psched.scheduler.ads import WorkerAd
    from p2psched.scheduler.run import Connect
    from p2psched.wire.address import relay_address

    sched, worker = Identity.generate(), Identity.generate()
    old = relay_address("10.0.0.1:4001", worker.node_id)
    stored = {
        "job-000000": StoredTask("job-000000", "sent", worker.node_id, 0.0, 0, None, 0.0),
        "job-000001": StoredTask("job-000001", "queued", None, 0.0, 0, None, 0.0),
    }
    run = JobRun(sched, "job", [spec(0), spec(1)], mtr=0.0, now=100.0)
    run.restore(stored, lambda w: (old,), 100.0)
    assert [a.addresses for a in run.actions() if isinstance(a, Connect)] == [(old,)]
    run.disconnected(worker.node_id, "cannot connect to the gate at 10.0.0.1:4001", 101.0)
    t = run.tasks["job-000000"]
    assert t.state == S.SENT and t.worker == worker.node_id  # not lost: waited for
    new = relay_address("10.0.0.2:4001", worker.node_id)
    profile = Profile(cpu_model="x", cpu_cores=1, ram_gb=1.0, drivers=("echo",), addresses=(new,))
    run.add_workers([WorkerAd(worker.node_id, profile, seq=5, expires=1e12)], 103.0)
    assert any(isinstance(a, Connect) and a.addresses == (new,) for a in run.actions())


def test_a_direct_worker_a_restarted_scheduler_cannot_dial_has_its_tasks_placed_again() -> None:
    sched, worker = Identity.generate(), Identity.generate()
    stored = {"job-000000": StoredTask("job-000000", "sent", worker.node_id, 0.0, 0, None, 0.0)}
    run = JobRun(sched, "job", [spec(0)], mtr=0.0, now=100.0)
    run.restore(stored, lambda w: ("10.0.0.9:5000",), 100.0)
    run.actions()
    run.disconnected(worker.node_id, "connection refused", 101.0)
    t = run.tasks["job-000000"]
    assert t.state == S.QUEUED and t.attempts == 0  # it never ran there, as far as we know


def test_an_output_the_store_keeps_in_a_file_is_not_read_back_on_a_restart() -> None:
    net = make_net(2, 1)
    assert net.run.counts() == {"completed": 2}
    stored = snapshot(net.run)
    stored["job-000001"] = replace(stored["job-000001"], output=b"", output_file="ab" * 32)
    run = restarted(net, 2, stored=stored)
    assert run.tasks["job-000000"].output == {"out": {"n": 0}}
    assert run.tasks["job-000001"].output is Spooled.IN_STORE
    assert run.done and run.counts() == {"completed": 2}


def test_a_task_that_ran_across_a_restart_is_not_taken_for_a_false_duration() -> None:
    """A task runs 20 s on an honest worker, the scheduler restarting meanwhile: its receipt
    says 20 s, which is right. The restarted scheduler did not see it dispatched nor started:
    it notes no mismatch in the worker's record, nor learns a run time it did not measure."""
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=1, queue_depth=0)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0.0, now=net.now, durable=True)
    net.hold = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    ((wid, peer, task),) = net.started
    net.advance(10)  # seen running
    net.up.discard(wid)  # the scheduler is gone; the worker has not noticed
    run = restarted(net, 1)
    net.pump()  # reconnect; its beat says it runs the task
    net.advance(10)
    net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
    net.pump()
    t = run.tasks["job-000000"]
    assert t.state == S.COMPLETED and t.receipt is not None and t.receipt.duration >= 19
    assert run.views._views[a.node_id].duration_mismatches == 0
