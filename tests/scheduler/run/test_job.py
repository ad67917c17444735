"""`JobRun` between the real scheduler and worker cores (`tests.harness.net`): whole jobs,
and every way a task goes back to the queue or ends: a lost or silent worker, a failing
driver, a cancel, a timeout, a ban, the job's deadline."""

from __future__ import annotations

import math
from dataclasses import replace

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import DispatchConfig, JobRun
from p2psched.scheduler.strategy import Strategy
from p2psched.worker import manager as wm
from tests.harness.net import ad, make_net, receipts_verify, spec

S = TaskState


def test_two_hundred_tasks_over_five_workers_complete_once_each() -> None:
    net = make_net(200, 5)
    assert net.run.done
    assert sorted(net.settled) == sorted(net.run.tasks)  # every task settled exactly once
    receipts_verify(net)
    assert {t.worker for t in net.run.tasks.values()} == set(net.workers)
    assert all(t.output == {"out": t.spec.input} for t in net.run.tasks.values())


def test_lost_worker_tasks_finish_elsewhere() -> None:
    net = make_net(0, 0)
    ids = [Identity.generate() for _ in range(3)]
    net.workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=1) for i in ids}
    net.run = JobRun(net.run.identity, "job", [spec(k) for k in range(12)], mtr=0, now=net.now)
    net.hold = True
    net.run.add_workers([ad(i) for i in ids], net.now)
    net.pump()
    victim = net.started[0][0]
    net.drop(victim)
    net.pump()
    net.hold = False
    for _ in range(100):
        if net.run.done:
            break
        held, net.started = net.started, []
        for wid, peer, task in held:
            if wid in net.up:
                net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
        net.pump()
        net.advance(1)
    assert net.run.done and net.run.counts() == {"completed": 12}
    assert sorted(net.settled) == sorted(net.run.tasks)
    assert all(t.worker != victim for t in net.run.tasks.values())


def test_silent_worker_is_given_up_after_its_heartbeat_stops() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=1, queue_depth=0)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    net.hold = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    assert net.run.tasks["job-000000"].state == S.SENT
    net.advance(3)  # beats arrive: it is running
    assert net.run.tasks["job-000000"].state == S.RUNNING
    net.workers[a.node_id].heartbeat_s = math.inf  # it hangs
    net.workers[a.node_id]._peers[net.run.identity.node_id].next_beat = math.inf
    net.advance(6)
    assert (a.node_id, "heartbeat stopped") in net.closed
    t = net.run.tasks["job-000000"]
    assert t.state == S.QUEUED and a.node_id in t.excluded and t.attempts == 1


def test_driver_failure_retries_elsewhere_then_fails_with_the_reason() -> None:
    net = make_net(0, 0)
    ids = [Identity.generate() for _ in range(3)]
    net.workers = {i.node_id: wm.TaskManager(i) for i in ids}
    net.run = JobRun(net.run.identity, "job", [spec(0, retries=1)], mtr=0, now=net.now)
    net.hold = True
    net.run.add_workers([ad(i) for i in ids], net.now)
    net.pump()
    for _ in range(2):
        ((wid, peer, task),) = net.started
        net.started = []
        net.workers[wid].finished(peer, task["id"], None, "exit code 3: boom", net.now)
        net.pump()
    t = net.run.tasks["job-000000"]
    assert t.state == S.FAILED and len(t.excluded) == 2
    assert t.error == "exit code 3: boom (2 workers failed it so)"


def test_a_task_its_only_worker_failed_ends_with_that_workers_reason() -> None:
    """Retries left but no other worker: once no worker comes along, the task ends with the
    reason its worker gave, not only with "it kept failing" (which is what made it skipped)."""
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a)}
    config = DispatchConfig(no_worker_s=30)
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now, config=config)
    net.hold = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    ((_, peer, task),) = net.started
    reason = "this worker serves no endpoint for model 'llama-3-8b'; models: none"
    net.workers[a.node_id].finished(peer, task["id"], None, reason, net.now)
    net.pump()
    net.advance(40)
    t = net.run.tasks["job-000000"]
    assert t.state == S.FAILED
    assert t.error == f"{reason} (1 worker failed it so); no other worker"


def test_cancel_queued_committed_and_running() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=1, queue_depth=1)}
    net.run = JobRun(net.run.identity, "job", [spec(k) for k in range(3)], mtr=0, now=net.now)
    net.hold = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    states = {tid: t.state for tid, t in net.run.tasks.items()}
    assert sorted(states.values()) == [S.QUEUED, S.SENT, S.SENT]
    assert net.run.cancel(None, net.now) == sorted(states)
    net.pump()
    assert all(t.state == S.ABORTED for t in net.run.tasks.values())
    assert net.workers[a.node_id].capacity == 2  # the worker let go of both


def test_task_timeout_on_the_scheduler_side_stops_it_on_the_worker() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a)}
    net.run = JobRun(
        net.run.identity,
        "job",
        [spec(0, timeout=5, retries=0)],
        mtr=0,
        now=net.now,
        config=DispatchConfig(silence_s=1000),
    )
    net.hold = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    assert net.workers[a.node_id].free_slots == 0
    net.advance(14)
    assert net.run.tasks["job-000000"].state == S.RUNNING
    net.advance(2)
    t = net.run.tasks["job-000000"]
    assert t.state == S.TIMED_OUT and "timed out after 5 s" in (t.error or "")
    assert net.workers[a.node_id].free_slots == 1  # the cancel reached it: it let go


def test_a_task_no_worker_can_take_does_not_hold_up_the_others() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=1, queue_depth=0)}
    net.run = JobRun(
        net.run.identity, "job", [spec(k, retries=3) for k in range(4)], mtr=0, now=net.now
    )
    net.run.tasks["job-000000"].excluded.add(a.node_id)  # as if it had failed there before
    net.run.tasks["job-000000"].retry = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(2)
    counts = net.run.counts()
    assert counts["completed"] == 3 and counts["queued"] == 1  # the others went past it


def test_a_banned_worker_stays_out_when_it_republishes() -> None:
    net = make_net(0, 0)
    liar, honest = Identity.generate(), Identity.generate()
    net.workers = {
        liar.node_id: wm.TaskManager(liar, price=0.1),
        honest.node_id: wm.TaskManager(honest, price=0.5),
    }
    net.run = JobRun(net.run.identity, "job", [spec(k) for k in range(6)], mtr=0, now=net.now)
    net.behave[liar.node_id] = lambda m: {**m, "output": "forged"} if m["t"] == "result" else m
    net.run.add_workers([ad(liar, 0.1), ad(honest, 0.5)], net.now)
    net.pump()
    fresh = replace(ad(liar, 0.1), seq=2)  # its next ad
    net.run.add_workers([fresh], net.now)
    net.advance(10)
    assert [w for w, _ in net.closed] == [liar.node_id]  # banned once, never again
    assert net.run.counts() == {"completed": 6}
    assert {t.worker for t in net.run.tasks.values()} == {honest.node_id}


def test_the_deadline_ends_the_job() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=1, queue_depth=0)}
    net.run = JobRun(
        net.run.identity,
        "job",
        [spec(k) for k in range(3)],
        mtr=0,
        now=net.now,
        deadline=net.now + 20,
    )
    net.hold = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(19)
    assert not net.run.done
    net.advance(2)
    assert net.run.done
    assert sorted(t.state.value for t in net.run.tasks.values()) == [
        "failed",
        "failed",
        "timed_out",
    ]
    assert all("deadline passed" in (t.error or "") for t in net.run.tasks.values())
    assert net.workers[a.node_id].free_slots == 1  # told to stop


def test_a_job_uses_the_nodes_predictor_and_views_even_while_they_are_empty() -> None:
    from p2psched.scheduler.predictor import Predictor
    from p2psched.scheduler.worker_views import WorkerViews

    predictor, views, strategy = Predictor(), WorkerViews(), Strategy()
    assert len(predictor) == 0 and len(views) == 0  # empty: falsy, but still the node's
    run = JobRun(
        Identity.generate(),
        "job",
        [spec(0)],
        mtr=1.0,
        now=0.0,
        strategy=strategy,
        predictor=predictor,
        views=views,
    )
    assert run.predictor is predictor and run.views is views and run.strategy is strategy


def test_a_task_done_before_its_cancel_reached_the_worker_is_paid_as_the_worker_records() -> None:
    """Cancelled while it ran, it finished before the cancel arrived: the worker signed a
    receipt for it and records the money earned; the scheduler pays it too (the commitment
    stands), so the two ledgers agree. The task stays aborted."""
    from p2psched.store.journal import Charged
    from p2psched.wire.messages import Ack, Send, encode, parse

    net = make_net(0, 1, prices=[0.25])
    net.run.durable = True
    net.hold = True
    net.run.add_tasks([spec(0)], net.now)
    net.pump()
    [(wid, peer, task)] = net.started
    worker = net.workers[wid]
    worker.finished(peer, task["id"], "done", None, net.now)  # its result is on its way ...
    result = next(a.message for a in worker.actions() if isinstance(a, Send))
    net.run.cancel(None, net.now)  # ... as the cancel goes out
    net.run.actions()
    net.run.receive(wid, parse(encode(result)), net.now)
    t = net.run.tasks[task["id"]]
    assert t.state == TaskState.ABORTED and t.receipt is not None
    assert net.run.spent == 0.25
    assert any(isinstance(e, Charged) for e in net.run.journal)
    assert any(isinstance(a, Send) and isinstance(a.message, Ack) for a in net.run.actions())
