"""The worker's task manager on its own, fed messages as a scheduler sends them: leases
that expire, results kept until acknowledged, cancels and withdrawals, messages of the
wrong direction, outputs that cannot go back, and the terms it serves on (drivers' caps,
who may use it, each scheduler's slots and spend, prices by priority)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from p2psched.identity import Identity
from p2psched.store.journal import Issued
from p2psched.wire.deal import MAX_INPUT_BYTES, Commitment, Receipt
from p2psched.wire.messages import Ready, Send
from p2psched.worker import manager as wm
from p2psched.worker.policy import DriverCaps, PriorityPrices, SchedulerPolicy, Terms
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


# -- the terms it serves on: caps, who, how much, at what price -------------------------------


def asked(w: wm.TaskManager, sched: Identity, now: float = 0.0, **fields: Any) -> dict[str, Any]:
    """`sched` asks `w` for a quote for four echo tasks (`fields` added to, or replacing, what
    its request says); the answer as it goes on the wire (after what went before it)."""
    request = {"t": "quote?", "rid": 9, "job": "job", "tasks": 4, "driver": "echo"}
    w.receive(sched.node_id, wire({**request, "model": None, "max_price": 1e9, **fields}), now)
    [answer] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)][-1:]
    return dict(answer)


def committed(
    w: wm.TaskManager,
    sched: Identity,
    ids: list[str],
    now: float = 0.0,
    *,
    price: float = 0.0,
    run: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`sched` commits `ids` to `w` at `price`, with the tasks `run`; the answer on the wire
    (a lease or a rejection)."""
    c = Commitment(sched.node_id, w.identity.node_id, "job", ids, price, now).signed(sched)
    message = {"t": "commit", "rid": 1, "commitment": c.to_wire(), "run": run or []}
    w.receive(sched.node_id, wire(message), now)
    answers = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    return dict(answers[0])


def task(task_id: str, *, timeout: float = 5.0, size: int = 1) -> dict[str, Any]:
    return {"id": task_id, "driver": "echo", "model": None, "input": "x" * size, "timeout": timeout}


def serving(terms: Terms | None = None, **manager: Any) -> tuple[wm.TaskManager, Identity]:
    """A worker on `terms`, and a scheduler connected to it (its first beat read)."""
    w = wm.TaskManager(Identity.generate(), terms=terms or Terms(), **manager)
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    w.actions()
    return w, sched


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (
            {"timeout": 604800.0},
            "timeout 604800 s is over this worker's max_timeout_s 3600 for driver echo",
        ),
        ({"input_bytes": 2001}, "input of 2001 bytes is over this worker's max_input_bytes 2000"),
        ({"timeout": 3600.0, "input_bytes": 2000}, None),
        ({}, None),  # a scheduler that does not say: refused when it sends the tasks
    ],
)
def test_a_quote_request_over_a_drivers_caps_is_declined_naming_the_cap(
    fields: dict[str, Any], says: str | None
) -> None:
    w, sched = serving(Terms(caps={"echo": DriverCaps(3600.0, 2000)}))
    answer = asked(w, sched, **fields)
    if says is None:
        assert answer["t"] == "quote"
    else:
        assert answer["t"] == "decline" and says in answer["reason"] and not answer["busy"]


def test_caps_hold_by_default_and_again_when_the_tasks_come_whatever_was_asked() -> None:
    """The defaults cap a timeout at an hour. A scheduler may say one thing when it asks and
    send another: a commitment whose tasks are over the caps is rejected, and a task sent
    over them fails with the cap as its reason; neither is started."""
    w, sched = serving()
    assert "max_timeout_s 3600 for driver echo" in asked(w, sched, timeout=7 * 86400.0)["reason"]
    assert asked(w, sched, timeout=60.0, input_bytes=10)["t"] == "quote"
    reject = committed(w, sched, ["t1"], run=[task("t1", timeout=7200.0)])
    assert reject["t"] == "reject" and not reject["busy"]
    assert "task t1: timeout 7200 s is over this worker's max_timeout_s 3600" in reject["reason"]
    assert w.tasks_held == 0
    assert committed(w, sched, ["t2", "t3"])["t"] == "lease"
    big = task("t3", size=MAX_INPUT_BYTES)  # (its encoding is a few bytes more)
    w.receive(sched.node_id, wire({"t": "run", "tasks": [task("t2", timeout=7200.0), big]}), 1.0)
    actions = w.actions()
    assert not any(isinstance(a, wm.Start) for a in actions)
    errors = [on_wire(a.message)["error"] for a in actions if isinstance(a, Send)]
    assert "task t2: timeout 7200 s is over this worker's max_timeout_s 3600" in errors[0]
    assert f"over this worker's max_input_bytes {MAX_INPUT_BYTES} for driver echo" in errors[1]


def test_a_denied_or_unlisted_scheduler_is_refused_at_every_step() -> None:
    w, sched = serving()
    other = Identity.generate()
    w.connected(other.node_id, other.public_key, 0.0)
    w.actions()
    assert committed(w, sched, ["t1"])["t"] == "lease"  # before its operator said no
    w.terms.policy = SchedulerPolicy(deny=frozenset({sched.node_id}))
    denied = f"does not serve scheduler {sched.node_id.hex()[:16]}…: denied by its operator"
    answer = asked(w, sched)
    assert answer["t"] == "decline" and denied in answer["reason"] and not answer["busy"]
    assert denied in committed(w, sched, ["t2"])["reason"]
    dispatch(w, sched, "t1", 1.0)  # leased before: it is still not run
    actions = w.actions()
    assert not any(isinstance(a, wm.Start) for a in actions)
    assert [denied in on_wire(a.message)["error"] for a in actions if isinstance(a, Send)] == [True]
    assert asked(w, other)["t"] == "quote"
    w.terms.policy = SchedulerPolicy(only_allowed=True, allow=frozenset({sched.node_id}))
    assert asked(w, sched)["t"] == "quote"
    assert "not among those its operator allows" in asked(w, other)["reason"]


def test_a_scheduler_holds_at_most_its_slots() -> None:
    w, sched = serving(Terms(policy=SchedulerPolicy(slots=2)), slots=4)
    other = Identity.generate()
    w.connected(other.node_id, other.public_key, 0.0)
    w.actions()
    assert asked(w, sched)["quote"]["capacity"] == 2
    assert committed(w, sched, ["t1"])["t"] == "lease"
    assert asked(w, sched)["quote"]["capacity"] == 1
    reject = committed(w, sched, ["t2", "t3"])
    holds = f"scheduler {sched.node_id.hex()[:16]}… holds 1 of its 2 slots on this worker"
    assert reject["t"] == "reject" and reject["busy"] and holds in reject["reason"]
    assert committed(w, sched, ["t2"])["t"] == "lease"
    answer = asked(w, sched)
    assert answer["t"] == "decline" and answer["busy"]
    assert "holds 2 of its 2 slots on this worker" in answer["reason"]
    assert asked(w, other)["quote"]["capacity"] == 2  # another scheduler's share is its own
    dispatch(w, sched, "t1", 1.0)
    w.finished(sched.node_id, "t1", "done", None, 2.0)
    assert asked(w, sched)["quote"]["capacity"] == 1


def test_a_scheduler_is_charged_at_most_its_spend_per_rolling_hour() -> None:
    w, sched = serving(Terms(policy=SchedulerPolicy(spend_per_hour=1.0)), price=0.3, slots=4)
    assert asked(w, sched, 10.0)["quote"]["capacity"] == 3  # 0.9 of 1.0
    assert committed(w, sched, ["t1", "t2"], 10.0, price=0.3)["t"] == "lease"
    assert asked(w, sched, 10.0)["quote"]["capacity"] == 1  # 0.6 committed
    reject = committed(w, sched, ["t3", "t4"], 10.0, price=0.3)
    assert reject["t"] == "reject" and reject["busy"]
    assert "spent 0 (and 0.6 committed) of its 1 per hour on this worker" in reject["reason"]
    for t in ("t1", "t2"):
        dispatch(w, sched, t, 10.0)
        w.finished(sched.node_id, t, "done", None, 20.0)
    assert asked(w, sched, 20.0)["quote"]["capacity"] == 1  # charged 0.6 now
    assert committed(w, sched, ["t3"], 20.0, price=0.3)["t"] == "lease"
    dispatch(w, sched, "t3", 20.0)
    w.finished(sched.node_id, "t3", "done", None, 30.0)
    answer = asked(w, sched, 30.0)
    assert answer["t"] == "decline" and answer["busy"]
    assert "spent 0.9 of its 1 per hour on this worker" in answer["reason"]
    assert asked(w, sched, 3619.0)["t"] == "decline"
    assert asked(w, sched, 3620.0)["quote"]["capacity"] == 2  # the first two are an hour old


def test_a_scheduler_at_its_slots_is_offered_no_free_slot_for_its_places() -> None:
    """Late binding: a free slot goes to the oldest reservation whose scheduler may take one
    more task, not to one that would have to be turned away."""
    w, sched = serving(Terms(policy=SchedulerPolicy(slots=1)), slots=3)
    reserve = {"t": "reserve", "rid": 5, "job": "job", "tasks": 3, "driver": "echo"}
    w.receive(sched.node_id, wire({**reserve, "model": None, "max_price": 1e9}), 0.0)
    readies = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert readies == [{"t": "ready", "rid": 5, "price": 0.0, "gpus": 0}]  # one slot, not three
    w.receive(sched.node_id, wire({**reserve, "rid": 6, "model": None, "max_price": 1e9}), 0.0)
    [answer] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert answer["t"] == "decline" and answer["busy"]
    assert "holds 1 of its 1 slots on this worker" in answer["reason"]  # the slot held for it


def test_places_reserved_and_left_unanswered_do_not_hold_the_slots() -> None:
    """A stranger reserves 64 places and never answers a `ready`: once one went unanswered
    for `lease_s`, the rest of its reservation is dropped, so a scheduler that reserved after
    it gets the free slots, not the 63 others' turns first."""
    w, hoarder = serving(slots=2)
    honest = connected(w)
    w.receive(hoarder.node_id, wire({**RESERVE, "rid": 1, "tasks": 64}), 0.0)
    assert readies(w) == [hoarder.node_id, hoarder.node_id]
    w.receive(honest.node_id, wire({**RESERVE, "rid": 2, "tasks": 2}), 1.0)
    assert readies(w) == []
    w.tick(w.lease_s + 1)
    assert readies(w) == [honest.node_id, honest.node_id]


RESERVE = {"t": "reserve", "job": "job", "driver": "echo", "model": None, "max_price": 1e9}


def connected(w: wm.TaskManager) -> Identity:
    """One more scheduler connected to `w` (its first beat read)."""
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    w.actions()
    return sched


def readies(w: wm.TaskManager) -> list[bytes]:
    """To whom `w` said a slot is free, in order, since last asked."""
    return [a.peer for a in w.actions() if isinstance(a, Send) and isinstance(a.message, Ready)]


@pytest.mark.parametrize(("priority", "price"), [(None, 1.0), (1, 0.8), (5, 1.0), (9, 1.5)])
def test_the_quote_is_priced_by_the_jobs_priority_band(priority: int | None, price: float) -> None:
    prices = PriorityPrices(low=0.8, normal=1.0, high=1.5)
    w, sched = serving(Terms(prices=prices), price=1.0)
    fields = {} if priority is None else {"priority": priority}
    assert asked(w, sched, **fields)["quote"]["price"] == price
    too_little = asked(w, sched, **fields, max_price=price - 0.01)
    assert too_little["t"] == "decline" and f"asks {price:g}" in too_little["reason"]


def test_a_commitment_is_taken_at_the_cheapest_bands_price_and_no_less() -> None:
    """Priority is the scheduler's word: any may ask at the low band, so its price is the
    least a commitment may pay (what the ad shows)."""
    w, sched = serving(Terms(prices=PriorityPrices(low=0.8, high=1.5)), price=1.0)
    assert committed(w, sched, ["t1"], price=0.8)["t"] == "lease"
    reject = committed(w, sched, ["t2"], price=0.79)
    assert "price 0.79 is below this worker's minimum 0.8" in reject["reason"]


def test_the_grace_a_gone_scheduler_gets_is_a_minute_by_default() -> None:
    w, sched = running_t1(slots=1)
    w.disconnected(sched.node_id, 1.0)
    assert w.next_deadline() == 61.0


def test_partial_results_go_out_only_while_the_task_runs_and_its_scheduler_is_there() -> None:
    w, sched = running_t1()
    w.partial(sched.node_id, "t1", {"delta": "Hel"})
    w.partial(sched.node_id, "t2", {"delta": "not mine"})  # no such task here
    [part] = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert part == {"t": "partial", "task": "t1", "output": {"delta": "Hel"}}
    w.disconnected(sched.node_id, 1.0)  # gone: parts are not kept for it (the result is)
    w.partial(sched.node_id, "t1", {"delta": "lo"})
    assert not [a for a in w.actions() if isinstance(a, Send)]
    w.connected(sched.node_id, sched.public_key, 2.0)
    w.receive(sched.node_id, wire({"t": "cancel", "tasks": ["t1"]}), 2.0)
    w.actions()
    w.partial(sched.node_id, "t1", {"delta": "!"})  # stopping: nothing more of it goes
    assert not [a for a in w.actions() if isinstance(a, Send)]


def holding(ids: list[str], **manager: Any) -> tuple[wm.TaskManager, Identity]:
    """A worker (`manager` its settings) holding tasks `ids` (running, or queued behind) for
    a scheduler, whose earlier actions are read; and that scheduler."""
    w = wm.TaskManager(Identity.generate(), **manager)
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    for t in ids:
        commit(w, sched, t, 0.0)
        dispatch(w, sched, t, 0.0)
    w.actions()
    return w, sched


def test_short_results_wait_for_their_schedulers_next_to_share_one_signature() -> None:
    """A short task's result waits while more of its scheduler's tasks run or wait here: the
    last of them takes the batch out, under one signature (each receipt with its proof); a
    result with nothing more coming goes at once, alone, signed as before batches."""
    w, a = holding(["a1", "a2", "a3"], slots=4, queue_depth=0)
    b = Identity.generate()
    w.connected(b.node_id, b.public_key, 0.0)
    commit(w, b, "b1", 0.0)
    dispatch(w, b, "b1", 0.0)
    w.actions()
    for sched, t in ((a, "a1"), (b, "b1"), (a, "a2")):
        w.finished(sched.node_id, t, t, None, 0.001)
    assert [x.message.task for x in w.actions() if isinstance(x, Send)] == ["b1"]
    assert w.next_deadline() == 0.001 + w._unsigned.hold_s
    w.finished(a.node_id, "a3", "a3", None, 0.002)
    sent = [x.message for x in w.actions() if isinstance(x, Send)]
    assert [m.task for m in sent] == ["a1", "a2", "a3"]
    receipts = [m.receipt for m in sent]
    assert len({r.sig for r in receipts}) == 1
    assert [r.batch.index for r in receipts if r.batch] == [0, 1, 2]
    assert all(r.verify(w.identity.public_key) for r in receipts)
    assert w.next_deadline() >= 1.0  # (its next heartbeat)


def test_a_short_result_waits_no_longer_than_its_hold_and_a_long_one_not_at_all() -> None:
    w, sched = holding(["t1", "t2", "t3"], slots=2, queue_depth=1)
    w.finished(sched.node_id, "t1", 1, None, 0.001)  # t2 runs, t3 waits: held
    hold = w._unsigned.hold_s
    w.tick(0.001 + hold * 0.99)
    assert not [x for x in w.actions() if isinstance(x, Send)]
    w.tick(0.001 + hold)
    [alone] = [x.message.receipt for x in w.actions() if isinstance(x, Send)]
    assert alone.task == "t1" and alone.batch is msgspec.UNSET
    w.finished(sched.node_id, "t2", 2, None, 1.0)  # it ran for a second: it goes at once
    [long] = [x.message.receipt for x in w.actions() if isinstance(x, Send)]
    assert long.task == "t2" and long.verify(w.identity.public_key)


def test_a_result_made_while_its_scheduler_was_away_is_signed_and_sent_when_it_is_back() -> None:
    w = wm.TaskManager(Identity.generate(), durable=True)
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    commit(w, sched, "t1", 0.0)
    dispatch(w, sched, "t1", 0.0)
    w.actions()
    w.disconnected(sched.node_id, 1.0)
    w.finished(sched.node_id, "t1", 42, None, 2.0)
    assert w.holds_for(sched.node_id)  # (it owes that scheduler the result)
    w.connected(sched.node_id, sched.public_key, 3.0)
    again, _ = [a.message for a in w.actions() if isinstance(a, Send)]
    assert again.task == "t1" and again.receipt.verify(w.identity.public_key)
    assert [e.receipt for e in w.journal if isinstance(e, Issued)] == [again.receipt]


def test_a_result_held_for_a_batch_goes_before_the_beat_a_restarted_scheduler_reads() -> None:
    """A restarted scheduler takes the tasks its first beat does not name as dropped: a result
    waiting for a batch goes before that beat, not after (its task would run twice)."""
    w, sched = holding(["t1", "t2"], slots=2, queue_depth=0)
    w.finished(sched.node_id, "t1", 1, None, 0.001)  # (t2 runs on: held)
    w.actions()
    w.connected(sched.node_id, sched.public_key, 0.002)  # a new channel: it restarted
    said = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert [(m["t"], m.get("task")) for m in said] == [("result", "t1"), ("beat", None)]
