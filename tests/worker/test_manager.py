"""The worker's task manager on its own, fed messages as a scheduler sends them: leases
that expire, results kept until acknowledged, cancels and withdrawals, messages of the
wrong direction, and outputs that cannot go back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from p2psched.identity import Identity
from p2psched.wire.deal import Receipt
from p2psched.wire.messages import Send
from p2psched.worker import manager as wm
from tests.harness.net import commit, dispatch, on_wire, wire


def running_t1(**manager: Any) -> tuple[wm.TaskManager, Identity]:
    """A worker (`manager` its settings) running task "t1" for a scheduler, whose earlier
    actions are read; and that scheduler."""
    w = wm.TaskManager(Identity.generate(), **manager)
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    commit(w, sched, "t1", 0.0)
    dispatch(w, sched, "t1", 0.0)
    w.actions()
    return w, sched


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


def test_messages_of_the_wrong_direction_are_refused() -> None:
    w = wm.TaskManager(Identity.generate())
    from p2psched.wire.schema import SchemaError

    with pytest.raises(SchemaError, match="does not take 'decline'"):
        w.receive(b"x" * 32, wire({"t": "decline", "rid": 1, "reason": "no", "busy": False}), 0.0)
    with pytest.raises(SchemaError, match="unknown message type"):
        wire({"t": "steal"})
    with pytest.raises(SchemaError, match="run.tasks"):
        wire({"t": "run", "tasks": "all"})


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


def test_a_task_that_started_meanwhile_is_not_taken_back() -> None:
    w = wm.TaskManager(Identity.generate(), slots=1, queue_depth=2)
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    for tid in ("a", "b"):
        commit(w, sched, tid, 0.0)
        dispatch(w, sched, tid, 0.0)
    w.actions()
    w.receive(sched.node_id, wire({"t": "withdraw", "rid": 7, "tasks": ["a", "b"]}), 1.0)
    (answer,) = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert answer == {"t": "withdrawn", "rid": 7, "tasks": ["b"]}  # "a" runs: it stays


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
    w, sched = running_t1()
    assert w.finished(sched.node_id, "t1", output, None, 1.0) is False
    [result] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert says in result["error"] and result["output"] is None
    assert Receipt.from_wire(result["receipt"], "r").ok is False


def test_a_long_failure_reason_is_cut_at_the_source_so_the_result_stays_well_formed() -> None:
    """A driver's reason may be longer than the wire allows: the worker cuts it, so its
    scheduler gets a result it can read (a malformed one would cost it the whole link)."""
    from p2psched.wire.messages import encode, parse

    w, sched = running_t1()
    w.finished(sched.node_id, "t1", None, "exit code 1: " + "x" * 400, 1.0)
    [result] = [a.message for a in w.actions() if isinstance(a, Send)]
    parsed = parse(encode(result))  # what the scheduler reads: no SchemaError
    assert on_wire(parsed)["error"].startswith("exit code 1: xxx")
    assert len(on_wire(parsed)["error"]) == 300


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ("signed_by_another", "not signed by the scheduler on this channel"),
        ("for_another_scheduler", "not signed by the scheduler on this channel"),
        ("for_another_worker", "names another worker"),
    ],
)
def test_a_commitment_that_does_not_bind_this_scheduler_and_worker_is_rejected(
    forgery: str, reason: str
) -> None:
    """Only a commitment signed by the scheduler on this channel, naming it and this worker,
    buys a lease here: any other could be charged to someone who never signed it."""
    from p2psched.wire.deal import Commitment

    w = wm.TaskManager(Identity.generate())
    sched, other = Identity.generate(), Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    w.actions()
    scheduler, worker, signer = sched.node_id, w.identity.node_id, sched
    if forgery == "signed_by_another":
        signer = other
    elif forgery == "for_another_scheduler":
        scheduler, signer = other.node_id, other  # well signed, by someone else
    else:
        worker = other.node_id
    c = Commitment(scheduler, worker, "job", ["t1"], 0.0, 0.0).signed(signer)
    w.receive(
        sched.node_id, wire({"t": "commit", "rid": 1, "commitment": c.to_wire(), "run": []}), 0.0
    )
    [answer] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert answer["t"] == "reject" and reason in answer["reason"]
    assert w.tasks_held == 0


def test_tasks_of_a_scheduler_gone_past_its_grace_are_stopped() -> None:
    """A scheduler that went away may never come back: its running tasks run on for the
    grace period (it may reconnect), then stop, and free their slots for others."""
    w, sched = running_t1(slots=1, scheduler_grace_s=60.0)
    assert w.running == 1
    w.disconnected(sched.node_id, 1.0)
    assert w.next_deadline() == 61.0
    w.tick(60.9)
    assert not any(isinstance(a, wm.Abort) for a in w.actions()) and w.running == 1
    w.tick(61.0)
    assert [a.task_id for a in w.actions() if isinstance(a, wm.Abort)] == ["t1"]
    assert w.running == 0 and w.free_slots == 1
    assert not w.finished(sched.node_id, "t1", "late", None, 62.0)  # nobody wants it now


def test_a_scheduler_back_within_its_grace_keeps_its_running_tasks() -> None:
    w, sched = running_t1(slots=1, scheduler_grace_s=60.0)
    w.disconnected(sched.node_id, 1.0)
    w.connected(sched.node_id, sched.public_key, 30.0)
    w.actions()
    w.tick(100.0)
    assert not any(isinstance(a, wm.Abort) for a in w.actions()) and w.running == 1
