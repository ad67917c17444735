"""The worker's terms as data: a schedulers file's lines (a bad one named and left out), deny
over allow, a scheduler's room under its slots and its spend per rolling hour, the priority
bands, and the caps' refusals in the operator's words."""

from __future__ import annotations

import math

import pytest

from p2psched.worker.policy import (
    DriverCaps,
    Listing,
    PriorityPrices,
    SchedulerPolicy,
    Spending,
    read_listing,
    shown,
)

A, B, C = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


def test_a_schedulers_file_says_allow_and_deny_and_its_bad_lines_are_named() -> None:
    text = (
        "# who may use this worker\n"
        f"allow {A.hex()}\n"
        f"  deny {B.hex()}   # took too much\n"
        "\n"
        f"allow {C.hex()[:-2]}\n"  # one byte short
        f"permit {C.hex()}\n"
        f"allow {A.hex()} {B.hex()}\n"
        "deny \ufffd\ufffd\n"  # what bytes that are not UTF-8 read as
    )
    listing, problems = read_listing(text)
    assert listing == Listing(frozenset({A}), frozenset({B}))
    assert problems == [
        f"line 5: '{C.hex()[:-2]}' is not a node id (64 hex digits)",
        "line 6: not 'allow <node id>' or 'deny <node id>'",
        "line 7: not 'allow <node id>' or 'deny <node id>'",
        "line 8: '\ufffd\ufffd' is not a node id (64 hex digits)",
    ]


def test_deny_wins_over_allow_and_only_allowed_serves_those_listed() -> None:
    anyone = SchedulerPolicy(deny=frozenset({B}))
    assert anyone.refusal(A) is None
    assert anyone.refusal(B) == (
        f"this worker does not serve scheduler {B.hex()[:16]}…: denied by its operator"
    )
    listed = SchedulerPolicy(only_allowed=True, allow=frozenset({A}))
    assert listed.refusal(A) is None
    assert f"scheduler {shown(C)}: not among those its operator allows" in str(listed.refusal(C))
    both = listed.with_listing(Listing(allow=frozenset({B, C}), deny=frozenset({A})))
    assert both.refusal(B) is None and both.refusal(C) is None
    assert "denied by its operator" in str(both.refusal(A))  # allowed inline, denied in the file


def test_a_schedulers_room_is_its_slots_and_what_its_spend_leaves() -> None:
    policy = SchedulerPolicy(slots=4, spend_per_hour=1.0)
    assert policy.room(holding=1, committed=0.1, spent=0.6, price=0.1) == 3  # slots
    assert policy.room(holding=0, committed=0.0, spent=0.9, price=0.1) == 1  # spend (in floats)
    assert policy.room(holding=0, committed=0.2, spent=0.7, price=0.1) == 1
    assert policy.room(holding=0, committed=0.0, spent=0.0, price=0.0) == 4  # free: slots only
    assert policy.over(A, 1, 4, 0.0, 0.0, 0.1) == (
        f"scheduler {shown(A)} holds 4 of its 4 slots on this worker"
    )
    assert policy.over(A, 2, 3, 0.0, 0.0, 0.1) == (
        f"scheduler {shown(A)} holds 3 of its 4 slots on this worker, and asks for 2 more"
    )
    assert policy.over(A, 1, 1, 0.4, 1.2, 0.1) == (
        f"scheduler {shown(A)} spent 1.2 (and 0.4 committed) of its 1 per hour on this worker"
    )
    assert policy.over(A, 1, 0, 0.0, 0.5, 0.5) is None
    assert SchedulerPolicy().room(10**6, 1e9, 1e9, 1.0) == math.inf


def test_spending_is_over_a_rolling_hour() -> None:
    spending = Spending()
    spending.charge(A, 0.5, 100.0)
    spending.charge(A, 0.25, 1000.0)
    spending.charge(A, 0.0, 1000.0)  # a free task costs nothing, and is not kept
    assert spending.spent(A, 3699.0) == 0.75 and spending.spent(B, 3699.0) == 0.0
    assert spending.spent(A, 3700.0) == 0.25  # the first is an hour old
    spending.forget_old(4600.0)
    assert spending.spent(A, 4600.0) == 0.0 and not spending._charges


@pytest.mark.parametrize(
    ("priority", "multiplier"),
    [(0, 0.8), (3, 0.8), (4, 1.0), (5, 1.0), (6, 1.0), (7, 1.5), (9, 1.5)],
)
def test_priorities_fall_in_three_bands(priority: int, multiplier: float) -> None:
    prices = PriorityPrices(low=0.8, normal=1.0, high=1.5)
    assert prices.multiplier(priority) == multiplier
    assert prices.lowest == 0.8


def test_caps_refuse_in_the_operators_words() -> None:
    caps = DriverCaps(max_timeout_s=3600.0, max_input_bytes=1000)
    assert caps.refusal("command", 604800.0, 10) == (
        "timeout 604800 s is over this worker's max_timeout_s 3600 for driver command"
    )
    assert caps.refusal("echo", 60.0, 1001) == (
        "input of 1001 bytes is over this worker's max_input_bytes 1000 for driver echo"
    )
    assert caps.refusal("echo", 3600.0, 1000) is None
    assert caps.refusal("echo", None, None) is None  # a scheduler that does not say
