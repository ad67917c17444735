"""The gate's relay bookkeeping, sans I/O: reservation, circuit, byte, time and bandwidth
limits refuse the peer over them and nobody else."""

from __future__ import annotations

import pytest

from p2psched.gate.relay import Bandwidth, Circuit, Refusal, Relay, RelayLimits


def test_a_peer_over_its_reservation_limit_is_refused_and_others_are_not() -> None:
    relay = Relay(RelayLimits(reservations_per_peer=2, reservations_per_ip=3))
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    assert not isinstance(relay.reserve(1, a, "10.0.0.1", 0.0), Refusal)
    assert not isinstance(relay.reserve(2, a, "10.0.0.1", 0.0), Refusal)
    refused = relay.reserve(3, a, "10.0.0.1", 0.0)
    assert isinstance(refused, Refusal) and "already holds 2 reservations" in refused.reason
    assert not isinstance(relay.reserve(4, b, "10.0.0.1", 0.0), Refusal)  # b is not affected
    by_ip = relay.reserve(5, c, "10.0.0.1", 0.0)  # the fourth from one address
    assert isinstance(by_ip, Refusal) and "10.0.0.1" in by_ip.reason
    assert not isinstance(relay.reserve(6, c, "10.0.0.2", 0.0), Refusal)
    assert relay.counters["reservations_refused"] == 2
    assert relay.counters["reservations_made"] == 4


def test_a_refresh_is_not_a_new_reservation_and_an_unrefreshed_one_expires() -> None:
    relay = Relay(RelayLimits(reservations_per_peer=1, reservation_ttl=60.0))
    w = b"w" * 32
    relay.reserve(1, w, "10.0.0.1", 0.0)
    assert not isinstance(relay.reserve(1, w, "10.0.0.1", 50.0), Refusal)  # a refresh
    assert relay.next_deadline() == 110.0
    assert relay.expire(100.0) == []
    ended = relay.expire(110.0)
    assert [(e.kind, e.key) for e in ended] == [("reservation", 1)]
    assert relay.holder(w) is None


def test_a_peer_over_its_circuit_limit_is_refused_and_others_are_not() -> None:
    relay = Relay(RelayLimits(circuits_per_peer=2))
    w, s1, s2 = b"w" * 32, b"1" * 32, b"2" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    first = relay.request(s1, "10.0.0.1", w, 0.0)
    second = relay.request(s1, "10.0.0.1", w, 0.0)
    third = relay.request(s1, "10.0.0.1", w, 0.0)
    assert not isinstance(first, Refusal) and not isinstance(second, Refusal)
    assert isinstance(third, Refusal) and "2 circuits open" in third.reason
    assert not isinstance(relay.request(s2, "10.0.0.1", w, 0.0), Refusal)
    nobody = relay.request(s2, "10.0.0.1", b"x" * 32, 0.0)
    assert isinstance(nobody, Refusal) and "no reservation" in nobody.reason
    relay.close(first.cid)  # one closed: s1 may open another
    assert not isinstance(relay.request(s1, "10.0.0.1", w, 0.0), Refusal)


def test_circuit_limits_bytes_time_and_answer() -> None:
    relay = Relay(RelayLimits(circuit_bytes=1000, circuit_seconds=30.0, answer_seconds=5.0))
    w, s = b"w" * 32, b"s" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    slow = relay.request(s, "10.0.0.1", w, 0.0)
    up = relay.request(s, "10.0.0.1", w, 0.0)
    assert not isinstance(slow, Refusal) and not isinstance(up, Refusal)
    assert not isinstance(relay.accept(up.token, 1.0), Refusal)
    assert isinstance(relay.accept(up.token, 1.0), Refusal)  # a token serves once
    assert relay.carry(up.cid, 600, 1.0) == 0.0
    over = relay.carry(up.cid, 600, 1.0)
    assert isinstance(over, Refusal) and "1000 bytes" in over.reason
    ended = relay.expire(5.0)  # the worker never took `slow` up
    assert [(e.kind, e.key) for e in ended] == [("circuit", slow.cid)]
    assert "did not take it up" in ended[0].reason
    ended = relay.expire(31.0)
    assert [(e.kind, e.key) for e in ended] == [("circuit", up.cid)]


def test_bandwidth_is_shared_and_paid_back_over_time() -> None:
    bucket = Bandwidth(rate=1000.0, burst=100.0, level=100.0)
    assert bucket.take(100, 0.0) == 0.0
    assert bucket.take(500, 0.0) == pytest.approx(0.5)  # 500 bytes over: half a second
    assert bucket.take(0, 0.5) == pytest.approx(0.0)  # paid back by then
    assert bucket.take(100, 10.0) == 0.0  # idle time refills only up to the burst
    assert bucket.take(1, 10.0) == pytest.approx(0.001)


def test_one_address_cannot_take_every_circuit_under_many_ids() -> None:
    relay = Relay(RelayLimits(circuits=100, circuits_per_ip=3))
    w = b"w" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    for i in range(3):  # a fresh id each time: the per-peer limit alone would not stop it
        assert not isinstance(relay.request(bytes([i]) * 32, "10.0.0.66", w, 0.0), Refusal)
    sybil = relay.request(b"x" * 32, "10.0.0.66", w, 0.0)
    assert isinstance(sybil, Refusal) and "from your address 10.0.0.66" in sybil.reason
    assert not isinstance(relay.request(b"h" * 32, "10.0.0.1", w, 0.0), Refusal)


def test_the_gate_wide_circuit_cap_refuses_everyone_once_reached() -> None:
    """Peers each within their own limits, from addresses each within theirs, still cannot
    open more circuits through the gate than it allows in all."""
    relay = Relay(RelayLimits(circuits=3, circuits_per_peer=16, circuits_per_ip=16))
    w = b"w" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    opened = [relay.request(bytes([i]) * 32, f"10.0.{i}.1", w, 0.0) for i in range(3)]
    assert not any(isinstance(c, Refusal) for c in opened)
    fourth = relay.request(b"z" * 32, "10.0.9.1", w, 0.0)
    assert isinstance(fourth, Refusal) and "limit of 3 circuits open" in fourth.reason
    first = opened[0]
    assert not isinstance(first, Refusal)
    relay.close(first.cid)  # room again
    assert not isinstance(relay.request(b"z" * 32, "10.0.9.1", w, 0.0), Refusal)


CAP = 1e6
CHUNK = 1 << 16


def pumped(relay: Relay, circuits: list[Circuit | Refusal], seconds: float) -> dict[int, int]:
    """Bytes each circuit sent in `seconds` (virtual) when each pushes as fast as the relay
    lets it: it sends a chunk after the wait `carry` gave it, then asks again."""
    ready = {}
    for c in circuits:
        assert not isinstance(c, Refusal)
        relay.accept(c.token, 0.0)
        ready[c.cid] = 0.0  # when it may send next
    sent = {cid: 0 for cid in ready}
    while True:
        cid, at = min(ready.items(), key=lambda p: p[1])
        if at >= seconds:
            return sent
        wait = relay.carry(cid, CHUNK, at)
        assert not isinstance(wait, Refusal)
        ready[cid] = at + wait
        if at + wait < seconds:
            sent[cid] += CHUNK


@pytest.mark.parametrize(
    "modest_ip", ["10.0.0.7", "10.0.0.66"], ids=["another address", "the same address"]
)
def test_one_greedy_peer_cannot_take_the_whole_relay(modest_ip: str) -> None:
    """A greedy peer pushing on four circuits from 10.0.0.66 and a modest one pushing on one,
    for ten (virtual) seconds: the modest peer gets at least 40 % of the cap, from another
    address or behind the same one (a home's router)."""
    relay = Relay(RelayLimits(bandwidth=CAP))
    w = b"w" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    greedy = [relay.request(b"g" * 32, "10.0.0.66", w, 0.0) for _ in range(4)]
    modest = relay.request(b"m" * 32, modest_ip, w, 0.0)
    sent = pumped(relay, [*greedy, modest], 10.0)
    assert not isinstance(modest, Refusal)
    assert sent[modest.cid] / 10.0 >= 0.4 * CAP, sent
    # ... and all together stay within the cap, but for the bursts each peer starts with
    # (the gate's 1 MiB, shared among those active when each came).
    assert sum(sent.values()) <= 10.0 * CAP + 1.5 * (1 << 20) + 4 * CHUNK, sent


def test_many_ids_behind_one_address_get_one_addresss_share() -> None:
    """Eight peers (ids are cheap) from one address, and one peer from another:
    the one gets at least 40 % of the cap, as it would against a single peer."""
    relay = Relay(RelayLimits(bandwidth=CAP))
    w = b"w" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    many = [relay.request(bytes([i]) * 32, "10.0.0.66", w, 0.0) for i in range(8)]
    lone = relay.request(b"m" * 32, "10.0.0.7", w, 0.0)
    sent = pumped(relay, [*many, lone], 10.0)
    assert not isinstance(lone, Refusal)
    assert sent[lone.cid] / 10.0 >= 0.4 * CAP, sent
