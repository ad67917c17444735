"""Floods against the DHT core, sans-I/O on a fake clock (`now` passed in by hand): forged first
contacts are rate-limited per source prefix before any costly work, the peers a node knows are
served all through a flood, and strangers are never pinged."""

from __future__ import annotations

import os

import msgpack

from p2psched.dht import messages as m
from p2psched.dht.flood import PrefixRate
from p2psched.dht.protocol import Answered, DhtConfig
from p2psched.dht.routing import source_prefix
from p2psched.wire.codec import encode
from p2psched.wire.envelope import HEADER_BYTES, MAC_BYTES
from tests.harness.dht import NOW, Link, forged_first_contact, hold_records, introduce

NODE, B = ("127.0.0.1", 1), ("127.0.0.1", 2)
FLOOD = 50_000
SECONDS = 10.0  # the flood's length on the fake clock: 5,000 forged datagrams a second


def costly_opens(stats: dict[str, int]) -> int:
    """Datagrams that reached the key agreement (each forged one then fails its MAC)."""
    return stats["dropped_bad_mac"] + stats["dropped_bad_key"]


def test_a_prefix_gets_its_burst_then_its_rate_and_others_are_not_affected() -> None:
    rate = PrefixRate(rate=4, burst=5, total_rate=1000, total_burst=1000)
    assert sum(rate.allow("203.0.113.0/24", NOW) for _ in range(50)) == 5
    assert rate.allow("198.51.100.0/24", NOW)  # another prefix has its own bucket
    assert sum(rate.allow("203.0.113.0/24", NOW + 0.5) for _ in range(50)) == 2
    assert sum(rate.allow("203.0.113.0/24", NOW + 60) for _ in range(50)) == 5  # never over
    overall = PrefixRate(rate=10, burst=5, total_rate=1, total_burst=3)
    assert sum(overall.allow(f"10.0.{i}.0/24", NOW) for i in range(50)) == 3


def test_the_flood_prefix_is_the_slash_24_or_slash_48_loopback_included() -> None:
    assert source_prefix("127.0.9.77") == "127.0.9.0/24"
    assert source_prefix("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert source_prefix("::ffff:203.0.113.9") == "203.0.113.0/24"


def test_a_flood_of_forged_first_contacts_from_one_slash_24_is_capped_and_known_peers_served() -> (
    None
):
    """50,000 forged first contacts from 127.0.9.0/24 over ten seconds: at most the prefix's
    burst plus its rate reach the key agreement; a peer the node knows, even one inside the
    flooded /24, and a newcomer from elsewhere are answered every time."""
    link = Link()
    cfg = DhtConfig()
    node = link.add(NODE, cfg)
    known_inside, known_outside = ("127.0.9.200", 7), ("127.0.0.1", 2)
    inside, outside = link.add(known_inside), link.add(known_outside)
    introduce(link, known_inside, NODE)
    introduce(link, known_outside, NODE)
    asked = answered = 0
    for i in range(FLOOD):
        now = NOW + i * SECONDS / FLOOD
        node.datagram_received(forged_first_contact(now), (f"127.0.9.{i % 200}", 40000), now)
        if i % 1000 == 0:
            for _addr, core in ((known_inside, inside), (known_outside, outside)):
                core.request(link.contact(NODE), m.FindNode(os.urandom(32)), now)
                asked += 1
            newcomer = ("127.0.0.1", 100 + i // 1000)
            link.add(newcomer).request(link.contact(NODE), m.Ping(), now)
            asked += 1
            link.run(now)
            answered += sum(len(link.answers(a)) for a in (known_inside, known_outside, newcomer))
    assert answered == asked
    cap = cfg.stranger_burst + cfg.stranger_rate * SECONDS
    assert 0 < costly_opens(node.stats) <= cap
    assert node.stats["dropped_stranger_rate"] >= FLOOD - cap


def test_strangers_are_never_pinged_and_get_no_more_bytes_than_they_sent() -> None:
    """300 real identities on one /24 ask a node with a full table of contacts: each gets an
    answer (its first request was padded for it) no larger than its request; the node sends no
    request of its own to any of them."""
    link = Link()
    node = link.add(NODE)
    for i in range(30):
        peer = (f"10.{i}.0.1", 9000)
        link.add(peer)
        introduce(link, peer, NODE)
    sent = received = 0
    for i in range(300):
        stranger = link.add((f"198.51.100.{i % 250}", 10000 + i))
        stranger.request(link.contact(NODE), m.FindNode(os.urandom(32)), NOW)
        ((data, _),) = stranger.take_outgoing()
        node.datagram_received(data, (f"198.51.100.{i % 250}", 10000 + i), NOW)
        out = node.take_outgoing()
        sent += len(data)
        received += sum(len(d) for d, _ in out)
        assert len(out) == 1 and len(out[0][0]) <= len(data)
        body = msgpack.unpackb(out[0][0][HEADER_BYTES + MAC_BYTES :])
        assert isinstance(m.parse(m.split_cookie(body)[0])[1], m.Nodes)
    assert node.stats["requests_out"] == 0
    assert received <= sent


def test_a_retry_counts_only_from_the_address_asked_and_only_once() -> None:
    """A `Retry` relayed from elsewhere makes no one send again; a second `Retry` for the same
    request is its answer, not a loop. (b holds more records than fit in a padded request.)"""
    link = Link()
    a, b = link.add(NODE), link.add(("127.0.0.1", 2))
    key = os.urandom(32)
    hold_records(b, key, 30, 200)
    elsewhere = ("127.0.0.1", 999)
    a.request(link.contact(("127.0.0.1", 2)), m.FindValue(key), NOW)
    ((request, _),) = a.take_outgoing()
    b.datagram_received(request, NODE, NOW)
    ((retry, _),) = b.take_outgoing()
    a.datagram_received(retry, elsewhere, NOW)
    assert a.take_outgoing() == [] and a.stats["retries"] == 0

    rid = a.request(link.contact(("127.0.0.1", 2)), m.FindValue(key), NOW)
    ((request, _),) = a.take_outgoing()
    b.datagram_received(request, NODE, NOW)
    ((retry, _),) = b.take_outgoing()
    a.datagram_received(retry, ("127.0.0.1", 2), NOW)
    ((again, _),) = a.take_outgoing()  # with the cookie
    b.datagram_received(again, elsewhere, NOW)  # from elsewhere the cookie is refused
    ((second, _),) = b.take_outgoing()
    events = a.datagram_received(second, ("127.0.0.1", 2), NOW)
    assert a.take_outgoing() == [] and a.stats["retries"] == 1
    assert [(e.rid, type(e.message)) for e in events if isinstance(e, Answered)] == [(rid, m.Retry)]


def test_a_cookie_is_taken_only_with_an_answer_asked_for_and_only_of_its_length() -> None:
    link = Link()
    a, b = link.add(NODE), link.add(B)
    wrapped = m.with_cookie(m.to_wire(m.Pong(NODE), 5), bytes(m.COOKIE_BYTES))
    a.datagram_received(b.auth.seal(encode(wrapped), a.identity.public_key, NOW), B, NOW)
    assert a.stats["answers_unexpected"] == 1 and a.take_outgoing() == []  # kept, handed back: no
    short = m.with_cookie(m.to_wire(m.Ping(), 6), b"abc")  # a cookie is COOKIE_BYTES long
    a.datagram_received(b.auth.seal(encode(short), a.identity.public_key, NOW), B, NOW)
    not_padding = [m.PADDED, "zeros", m.to_wire(m.Ping(), 7)]
    a.datagram_received(b.auth.seal(encode(not_padding), a.identity.public_key, NOW), B, NOW)
    assert a.stats["dropped_schema"] == 2
