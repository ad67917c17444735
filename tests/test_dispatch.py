"""The scheduler's `JobRun` and the workers' `TaskManager`, joined by an in-memory link on a
virtual clock: negotiation, dispatch, receipts, and every way a task goes back to the queue."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
from msgspec.structs import replace as restruct

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import IllegalTransition, TaskState
from p2psched.scheduler.run import DispatchConfig, JobRun, Send
from p2psched.wire.deal import Receipt
from p2psched.worker import manager as wm
from tests.harness.net import ad, commit, dispatch, make_net, on_wire, receipts_verify, spec, wire

S = TaskState


def test_two_hundred_tasks_over_five_workers_complete_once_each() -> None:
    net = make_net(200, 5)
    assert net.run.done
    assert sorted(net.settled) == sorted(net.run.tasks)  # every task settled exactly once
    receipts_verify(net)
    assert {t.worker for t in net.run.tasks.values()} == set(net.workers)
    assert all(t.output == {"out": t.spec.input} for t in net.run.tasks.values())


def test_mtr_zero_prefers_the_cheapest_worker() -> None:
    net = make_net(4, 3, prices=[0.3, 0.1, 0.2])
    cheapest = [w for w, m in net.workers.items() if m.price == 0.1][0]
    assert [t.worker for t in net.run.tasks.values()] == [cheapest] * 4  # it had room for 4
    assert net.run.spent == pytest.approx(0.4)


def test_budget_is_never_exceeded() -> None:
    net = make_net(10, 2, prices=[1.0, 1.0], budget=3.5)
    assert net.run.spent <= 3.5
    assert net.run.counts()["completed"] == 3
    net.advance(40)  # nobody can be paid for the rest: they fail with the reason
    assert net.run.done and net.run.counts()["failed"] == 7


def test_price_above_the_task_budget_is_declined_with_the_reason() -> None:
    net = make_net(1, 1, prices=[2.0], max_price=1.0)
    net.advance(40)
    t = net.run.tasks["job-000000"]
    assert t.state == S.FAILED
    assert "price below its minimum" in (t.error or "")


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


def test_lease_expires_on_the_worker_without_a_dispatch() -> None:
    w = wm.TaskManager(Identity.generate(), slots=1, queue_depth=0, lease_s=10)
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    commit(w, sched, "t1", 0.0)
    assert w.capacity == 0
    w.tick(9.9)
    assert w.capacity == 0
    w.tick(10.0)
    assert w.capacity == 1  # the slot is free again
    w.actions()
    dispatch(w, sched, "t1", 11.0)
    [result] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert "no lease" in result["error"]


def test_scheduler_requeues_when_no_lease_comes() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    net.behave[a.node_id] = lambda m: {**m, "rid": 999} if m["t"] == "lease" else m
    net.run.add_workers([ad(a)], net.now)
    net.pump()  # the lease names a commitment never sent: the worker is dropped
    assert net.closed and "not committed" in net.closed[0][1]
    assert net.run.tasks["job-000000"].state == S.QUEUED


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
    assert t.state == S.FAILED and t.error == "exit code 3: boom" and len(t.excluded) == 2


@pytest.mark.parametrize("forgery", ["signature", "other_key", "hash", "oversize", "price"])
def test_forged_receipt_is_not_counted_and_the_task_runs_elsewhere(forgery: str) -> None:
    net = make_net(0, 0)
    liar, honest, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    net.workers = {
        liar.node_id: wm.TaskManager(liar, price=0.5),
        honest.node_id: wm.TaskManager(honest, price=0.9),
    }
    net.run = JobRun(
        net.run.identity,
        "job",
        [spec(0)],
        mtr=0,
        now=net.now,
        config=DispatchConfig(max_result_bytes=1000),
    )

    def forge(m: dict[str, Any]) -> dict[str, Any]:
        if m["t"] != "result":
            return m
        r = Receipt.from_wire(m["receipt"], "r")
        if forgery == "signature":
            r = restruct(r, sig=bytes(64))
        elif forgery == "other_key":
            r = restruct(r, worker=stranger.node_id).signed(stranger)
        elif forgery == "hash":
            m = {**m, "output": "something else"}
        elif forgery == "oversize":
            out = "x" * 5000
            from p2psched.wire.deal import result_hash

            r = restruct(r, result_hash=result_hash(out)).signed(liar)
            m = {**m, "output": out}
        elif forgery == "price":
            r = restruct(r, price=7.0).signed(liar)
        return {**m, "receipt": r.to_wire()}

    net.behave[liar.node_id] = forge
    net.run.add_workers([ad(liar, 0.5), ad(honest, 0.9)], net.now)
    net.pump()
    t = net.run.tasks["job-000000"]
    assert [w for w, _ in net.closed] == [liar.node_id]
    assert t.state == S.COMPLETED and t.worker == honest.node_id
    assert net.run.spent == pytest.approx(0.9)


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


def test_results_wait_on_the_worker_until_acknowledged() -> None:
    w = wm.TaskManager(Identity.generate())
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    commit(w, sched, "t1", 0.0)
    dispatch(w, sched, "t1", 0.0)
    w.disconnected(sched.node_id, 1.0)  # the scheduler went away while it ran
    w.actions()
    w.finished(sched.node_id, "t1", 42, None, 2.0)
    assert not [a for a in w.actions() if isinstance(a, Send)]
    w.connected(sched.node_id, sched.public_key, 3.0)
    again, beat = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert again["t"] == "result" and again["task"] == "t1" and again["output"] == 42
    # then at once what it still runs for that scheduler (nothing): so one that restarted
    # knows which of its tasks are gone
    assert beat == {"t": "beat", "running": [], "progress": []}
    w.receive(sched.node_id, wire({"t": "ack", "tasks": ["t1"]}), 4.0)
    w.connected(sched.node_id, sched.public_key, 5.0)
    assert [on_wire(a.message)["t"] for a in w.actions() if isinstance(a, Send)] == ["beat"]


def test_lifecycle_refuses_illegal_moves() -> None:
    assert S.QUEUED.to(S.NEGOTIATING) == S.NEGOTIATING
    for bad in [
        (S.COMPLETED, S.QUEUED),
        (S.QUEUED, S.COMPLETED),
        (S.ABORTED, S.RUNNING),
        (S.UNSCHEDULED, S.SENT),
        (S.FAILED, S.QUEUED),
    ]:
        with pytest.raises(IllegalTransition, match=f"from {bad[0].value} to {bad[1].value}"):
            bad[0].to(bad[1])
    assert {s for s in S if s.final} == {S.COMPLETED, S.FAILED, S.ABORTED, S.TIMED_OUT}


def test_messages_of_the_wrong_direction_are_refused() -> None:
    w = wm.TaskManager(Identity.generate())
    from p2psched.wire.schema import SchemaError

    with pytest.raises(SchemaError, match="does not take 'decline'"):
        w.receive(b"x" * 32, wire({"t": "decline", "rid": 1, "reason": "no", "busy": False}), 0.0)
    with pytest.raises(SchemaError, match="unknown message type"):
        wire({"t": "steal"})
    with pytest.raises(SchemaError, match="run.tasks"):
        wire({"t": "run", "tasks": "all"})


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


def test_busy_workers_are_waited_for_not_given_up() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=1, queue_depth=0)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    other = Identity.generate()
    w = net.workers[a.node_id]
    w.connected(other.node_id, other.public_key, net.now)
    commit(w, other, "theirs", net.now)  # another scheduler holds its only slot
    dispatch(w, other, "theirs", net.now)
    w.actions()
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(60)  # twice the no-worker limit
    assert net.run.tasks["job-000000"].state == S.QUEUED
    w.finished(other.node_id, "theirs", "done", None, net.now)
    w.actions()
    net.advance(5)
    assert net.run.tasks["job-000000"].state == S.COMPLETED


def test_a_quote_expired_on_arrival_counts_as_a_decline() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, quote_valid_s=-1.0)}  # its clock is behind
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(40)
    t = net.run.tasks["job-000000"]
    assert t.state == S.FAILED and "expired" in (t.error or "")


def test_a_cancelled_running_task_cannot_be_recommitted_until_it_stops() -> None:
    w = wm.TaskManager(Identity.generate(), slots=1)
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    commit(w, sched, "t1", 0.0)
    dispatch(w, sched, "t1", 0.0)
    w.receive(sched.node_id, wire({"t": "cancel", "tasks": ["t1"]}), 1.0)
    assert any(isinstance(a, wm.Abort) for a in w.actions())
    commit(w, sched, "t1", 1.0)
    [reject] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert reject["t"] == "reject" and "still stopping" in reject["reason"]
    w.finished(sched.node_id, "t1", None, "cancelled by its scheduler", 2.0)  # it stopped
    assert not [a for a in w.actions() if isinstance(a, Send)]  # nobody wants that
    commit(w, sched, "t1", 3.0)
    [lease] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert lease["t"] == "lease"


def test_a_worker_that_keeps_rejecting_is_given_up() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    commits = []

    def reject(m: dict[str, Any]) -> dict[str, Any]:
        if m["t"] != "lease":
            return m
        commits.append(m["rid"])
        return {"t": "reject", "rid": m["rid"], "reason": "changed my mind", "busy": False}

    net.behave[a.node_id] = reject
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(60)
    t = net.run.tasks["job-000000"]
    assert t.state == S.FAILED and "changed my mind" in (t.error or "")
    assert len(commits) == 3  # not for ever


def test_budget_edge_with_prices_that_do_not_add_up_exactly() -> None:
    net = make_net(10, 1, prices=[0.1], budget=0.35)
    net.advance(60)
    assert net.run.done
    assert net.run.counts() == {"completed": 3, "failed": 7}
    failed = [t for t in net.run.tasks.values() if t.state == S.FAILED]
    assert all("budget is spent" in (t.error or "") for t in failed)


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


def test_a_worker_always_busy_on_commit_is_given_up_in_the_end() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    net.behave[a.node_id] = lambda m: (
        {"t": "reject", "rid": m["rid"], "reason": "state changed", "busy": True}
        if m["t"] == "lease"
        else m
    )
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(200, step=1.0)
    assert net.run.done and net.run.tasks["job-000000"].state == S.FAILED


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


@pytest.mark.parametrize(
    ("output", "says"),
    [
        (2**70, "cannot be sent (OverflowError"),
        ("x" * (13 << 20), "over the 12582912-byte limit"),
        (json.loads("[" * 70 + "]" * 70), "nested deeper than 64"),
    ],
)
def test_an_output_that_cannot_go_back_fails_the_task_not_the_worker(
    output: Any, says: str
) -> None:
    w = wm.TaskManager(Identity.generate())
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    commit(w, sched, "t1", 0.0)
    dispatch(w, sched, "t1", 0.0)
    w.actions()
    assert w.finished(sched.node_id, "t1", output, None, 1.0) is False
    [result] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert says in result["error"] and result["output"] is None
    assert Receipt.from_wire(result["receipt"], "r").ok is False
