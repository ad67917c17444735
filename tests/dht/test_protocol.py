"""The DHT protocol core, sans-I/O: cores joined by an in-memory link, time passed in by hand."""

from __future__ import annotations

import os
import random

import msgpack
import pytest

from p2psched.dht import messages as m
from p2psched.dht.lookup import ValueLookup
from p2psched.dht.proof import AddressProofs
from p2psched.dht.protocol import (
    Answered,
    DhtConfig,
    DhtProtocol,
    RefreshDue,
    RepublishDue,
    TimedOut,
)
from p2psched.dht.records import Record, StoreLimits
from p2psched.dht.routing import Contact
from p2psched.identity import Identity
from p2psched.wire.codec import encode
from p2psched.wire.envelope import KIND_MAC, KIND_SIGNED
from tests.harness.dht import NOW, Link, hold_records, introduce

A, B, C = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)


def long_contacts(core: DhtProtocol, count: int) -> None:
    """`count` contacts with the longest IP literals, each in its own /48 so the table takes
    them."""
    for i in range(count):
        host = "2001:%x:aaaa:bbbb:cccc:dddd:eeee:ffff" % (0x1000 + i)
        core.routing.observe(Contact.of(Identity.generate().public_key, host, 65535), NOW)


def test_ping_by_address_then_both_tables_know_each_other() -> None:
    link = Link()
    a, b = link.add(A), link.add(B)
    rid = a.request(B, m.Ping(), NOW)
    link.run()
    (answer,) = link.answers(A)
    assert answer.rid == rid and answer.sender.node_id == b.node_id
    assert answer.message == m.Pong(A)
    # b answered from the address a sent to: a knows b is there. a's signed first datagram names
    # no recipient (anyone could have relayed it to b), so b does not take a into its table yet.
    assert b.node_id in a.routing and a.node_id not in b.routing
    # The second exchange uses the pair key (a MAC), not a signature; b's pong offers a cookie,
    # which a, announcing itself (as a join does), hands back at once from its address (a ping
    # of its own) to enter b's table; b sends no request of its own.
    a.request(link.contact(B), m.Ping(), NOW, announce=True)
    ((data, _),) = a.take_outgoing()
    assert data[2] == KIND_MAC
    b.datagram_received(data, A, NOW)
    link.run()
    assert a.node_id in b.routing
    assert a.stats["retries"] == 0 and b.stats["cookies_good"] == 1
    assert b.stats["requests_out"] == 0


def test_a_cookie_not_announced_rides_on_the_next_request() -> None:
    """A store's or a get's lookup spends no ping on a table entry: the cookie it was offered
    goes back with its next request there, which lets it in."""
    link = Link()
    a, b = link.add(A), link.add(B)
    a.request(B, m.Ping(), NOW)
    link.run()
    a.request(link.contact(B), m.Ping(), NOW)
    link.run()
    assert a.node_id not in b.routing  # offered a cookie, which is held, not pinged back
    assert a.stats["requests_out"] == 2 and b.stats["cookies_good"] == 0
    a.request(link.contact(B), m.FindNode(os.urandom(32)), NOW)
    link.run()
    assert b.stats["cookies_good"] == 1 and a.node_id in b.routing
    assert a.stats["requests_out"] == 3


def test_find_node_returns_the_closest_known_contacts() -> None:
    link = Link()
    hub = link.add(("127.0.0.1", 100))
    others = [link.add(("127.0.0.1", 200 + i)) for i in range(30)]
    for i in range(30):
        introduce(link, ("127.0.0.1", 200 + i), ("127.0.0.1", 100))
    assert len(hub.routing) >= 20  # (a bucket's 21st newcomer is of no use yet, so not checked)
    asker = others[0]
    target = os.urandom(32)
    asker.request(link.contact(("127.0.0.1", 100)), m.FindNode(target), NOW)
    link.run()
    (answer,) = [a for a in link.answers(("127.0.0.1", 200)) if isinstance(a.message, m.Nodes)]
    got = answer.message.contacts  # type: ignore[union-attr]
    assert got == hub.routing.closest(target, 20, exclude=asker.node_id)
    assert all(c.node_id != asker.node_id for c in got)
    assert len(got) == 20


def test_store_then_find_value_returns_the_verified_record() -> None:
    link = Link()
    a = link.add(A)
    link.add(B)
    key = os.urandom(32)
    record = a.publisher.publish(key, b"hello", 60.0, NOW)
    a.request(B, m.Store(record), NOW)
    link.run()
    (stored,) = link.answers(A)
    assert stored.message == m.Stored(True, "")
    link.add(C).request(B, m.FindValue(key), NOW)
    link.run()
    (found,) = link.answers(C)
    assert isinstance(found.message, m.Values)
    assert found.message.records == [record]


def test_a_forged_record_is_refused_on_store_and_dropped_on_fetch() -> None:
    link = Link()
    a = link.add(A)
    link.add(B)
    key = os.urandom(32)
    victim = Identity.generate()
    forged = Record(
        key, victim.public_key, 9, int((NOW + 60) * 1000), b"evil", a.identity.sign(b"x")
    )
    a.request(B, m.Store(forged), NOW)
    link.run()
    (answer,) = link.answers(A)
    assert answer.message == m.Stored(False, "bad signature")
    # A malicious holder answers a FIND_VALUE with the forged record: the asker hands it to
    # its caller unchecked (a get checks the newest per publisher, discovery only the ads that
    # match its need), and its check fails, from the cache too.
    c = link.add(C)
    rid = c.request(link.contact(A), m.FindValue(key), NOW)
    c.take_outgoing()  # the request never reaches A: A answers as it likes
    body = encode(m.to_wire(m.Values([forged], None, []), rid))
    events = c.datagram_received(a.auth.seal(body, c.identity.public_key, NOW), A, NOW)
    (got,) = events
    assert isinstance(got, Answered) and got.message == m.Values([forged], None, [])
    assert not c.verified(forged) and not c.verified(forged)


def test_unanswered_request_times_out_exactly_at_its_deadline() -> None:
    link = Link()
    a = link.add(A, DhtConfig(rpc_timeout=2.0))
    ghost = Contact(os.urandom(32), "127.0.0.1", 9, Identity.generate().public_key)
    a.routing.observe(ghost, NOW)
    rid = a.request(ghost, m.Ping(), NOW)
    link.run()
    assert a.next_deadline() == NOW + 2.0
    assert a.on_timer(NOW + 1.999) == []
    assert a.on_timer(NOW + 2.0) == [TimedOut(rid)]
    assert a.stats["rpc_timeouts"] == 1
    a.request(ghost, m.Ping(), NOW + 2.0)
    a.on_timer(NOW + 4.0)
    assert ghost.node_id not in a.routing  # two failures in a row: out of the table


def test_a_full_bucket_pings_its_oldest_and_keeps_it_if_it_answers() -> None:
    link = Link()
    a = link.add(A, DhtConfig(k=1))
    # Find two identities that fall into the same bucket of a's table.
    ids: dict[int, Identity] = {}
    while True:
        ident = Identity.generate()
        index = a.routing.bucket_index(ident.node_id)
        if index in ids:
            break
        ids[index] = ident
    b = link.add(B, identity=ids[index])
    c = link.add(C, identity=ident)
    introduce(link, B, A)  # b proves its address with a cookie: a sends nothing of its own
    assert b.node_id in a.routing and a.stats["requests_out"] == 0
    introduce(link, C, A, NOW + 1)  # b was heard from a second ago: c is of no use, no check
    assert a.stats["requests_out"] == 0 and a.stats["cookies_good"] == 1  # (b's)
    introduce(link, C, A, NOW + 61)  # b silent a minute: c proves its address, a pings b
    assert b.node_id in a.routing and c.node_id not in a.routing
    assert a.stats["requests_out"] == 1 and a.stats["cookies_good"] == 2
    # Now b is gone: the next check times out, and c takes b's place.
    del link.cores[B]
    introduce(link, C, A, NOW + 200)
    a.on_timer(NOW + 200 + a.config.rpc_timeout)
    assert b.node_id not in a.routing and c.node_id in a.routing


def test_hostile_datagrams_are_dropped_counted_and_the_node_keeps_serving() -> None:
    link = Link()
    a, b = link.add(A), link.add(B)
    rng = random.Random(5)
    introduce(link, B, A)
    genuine = b.auth.seal(encode(m.to_wire(m.Ping(), 77)), a.identity.public_key, NOW)
    a.datagram_received(genuine, B, NOW)
    assert len(a.take_outgoing()) == 1  # its Pong
    attacks = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(300)]
    attacks += [genuine[:n] for n in range(0, len(genuine), 7)]  # truncated
    attacks += [genuine + b"\x00", b"\x00" * 9000, genuine]  # trailing, oversized, replayed
    mallory = Identity.generate()
    attacks.append(genuine[:3] + mallory.public_key + genuine[35:])  # claims another sender
    forged = bytes((1, 0, KIND_SIGNED)) + mallory.public_key + genuine[35:43]
    attacks.append(forged + mallory.sign(b"whatever") + genuine[59:])  # signed, not over this
    table_before = len(a.routing)
    for data in attacks:
        assert a.datagram_received(data, ("198.51.100.9", 4000), NOW) == []
    assert a.take_outgoing() == []  # no answer to anything unauthenticated, not even an error
    dropped = sum(v for k, v in a.stats.items() if k.startswith("dropped_"))
    assert dropped == len(attacks)
    assert a.stats["dropped_replayed"] >= 1 and a.stats["dropped_oversized"] >= 1
    assert mallory.node_id not in a.routing and len(a.routing) == table_before
    # Still serving:
    b.request(link.contact(A), m.Ping(), NOW + 1)
    link.run(NOW + 1)
    assert [x.message for x in link.answers(B)][-1] == m.Pong(B)


def test_a_malformed_but_authenticated_request_gets_an_error_naming_the_field() -> None:
    link = Link()
    a, b = link.add(A), link.add(B)
    introduce(link, B, A)  # (to an unproven address, an Error longer than the request is not sent)
    bad = encode([m.FindNode.TYPE, 5, b"too short"])
    a.datagram_received(b.auth.seal(bad, a.identity.public_key, NOW), B, NOW)
    ((data, dst),) = a.take_outgoing()
    assert dst == B
    opened = b.auth.open(data, NOW)
    rid, msg = m.parse(msgpack.unpackb(opened.body))
    assert rid == 5 and isinstance(msg, m.Error)
    assert "body.target" in msg.reason and "32 bytes" in msg.reason
    assert a.stats["dropped_schema"] == 1


def test_a_flood_of_ids_from_one_prefix_stays_bounded() -> None:
    """300 identities on one /24, each answering at its address (so each passes the admission
    check): at most ten enter the table, and replay state stays within its bound."""
    link = Link()
    a = link.add(A, DhtConfig(max_peers=64))
    flood = [(f"203.0.113.{i % 250}", 5000 + i) for i in range(300)]
    for addr in flood:
        link.add(addr)
    for addr in flood:
        link.cores[addr].request(link.contact(A), m.Ping(), NOW, announce=True)
    link.run()
    flooders = [c for c in a.routing.contacts() if c.host.startswith("203.0.113.")]
    assert 0 < len(flooders) <= 10  # the table-wide cap for one /24
    assert a.auth.peer_count == 64  # replay state bounded
    # A loopback peer is unaffected by the prefix cap. (A second later: the windows the flood
    # pushed out left replay floors at the flood's counters, which a newcomer's clock passes.)
    b = link.add(B)
    introduce(link, B, A, NOW + 1)
    assert b.node_id in a.routing


def test_client_mode_nodes_are_answered_but_never_routed_through() -> None:
    link = Link()
    a = link.add(A)
    client = link.add(B, DhtConfig(client=True))
    client.request(A, m.Ping(), NOW)
    link.run()
    assert [x.message for x in link.answers(B)] == [m.Pong(B)]
    client.request(link.contact(A), m.Ping(), NOW)
    link.run()
    assert [x.message for x in link.answers(B)] == [m.Pong(B)]
    assert client.node_id not in a.routing and a.stats["requests_out"] == 0  # not even checked
    assert a.node_id in client.routing  # the client still routes through servers


def test_records_expire_republish_and_buckets_refresh_on_the_clock() -> None:
    cfg = DhtConfig(maintenance_interval=1.0, refresh_interval=100.0, store=StoreLimits())
    link = Link()
    a, b = link.add(A, cfg), link.add(B)
    introduce(link, B, A)
    key = os.urandom(32)
    a.store.put(a.publisher.publish(key, b"mine", 10.0, NOW), NOW)
    assert len(a.store.get(key, NOW)) == 1
    events = a.on_timer(NOW + 4.0)
    assert not [e for e in events if isinstance(e, RepublishDue)]
    events = a.on_timer(NOW + 5.0)
    (due,) = [e for e in events if isinstance(e, RepublishDue)]
    assert due.record.key == key and due.record.expires_ms == int((NOW + 15.0) * 1000)
    a.publisher.unpublish(key)
    assert not [e for e in a.on_timer(NOW + 11.0) if isinstance(e, RepublishDue)]
    assert a.store.get(key, NOW + 15.0) == []
    a.on_timer(NOW + 16.0)
    assert len(a.store) == 0 and a.stats["records_expired"] == 1
    refresh = [e for e in a.on_timer(NOW + 100.0) if isinstance(e, RefreshDue)]
    assert refresh and all(
        a.routing.bucket_index(e.target) >= a.routing.bucket_index(b.node_id) for e in refresh
    )
    assert not [e for e in a.on_timer(NOW + 101.0) if isinstance(e, RefreshDue)]


def test_find_value_answers_are_paged_under_the_datagram_limit() -> None:
    link = Link()
    a = link.add(A)
    key = os.urandom(32)
    records = hold_records(a, key, 30, 1000)
    c = link.add(C)
    cursor: bytes | None = None
    got: list[Record] = []
    for _ in range(30):
        c.request(A, m.FindValue(key, cursor), NOW)
        link.run()
        (answer,) = link.answers(C)
        assert isinstance(answer.message, m.Values)
        got += answer.message.records
        cursor = answer.message.next_cursor
        if cursor is None:
            break
    assert sorted(r.publisher_id for r in got) == sorted(r.publisher_id for r in records)
    assert a.stats["requests_in"] > 4  # it took several pages


def test_every_answer_fits_in_a_datagram() -> None:
    """The largest answers (20 contacts, a full page) stay under max_datagram."""
    link = Link()
    a = link.add(A)
    key = os.urandom(32)
    hold_records(a, key, 40, 4096)
    long_contacts(a, 40)
    assert len(a.routing) >= 20
    c = link.add(C)
    a.request(link.contact(C), m.Ping(), NOW)  # c answers a: a proven address gets full answers
    link.run()
    sizes: list[int] = []
    got: list[m.Message] = []
    for req in (m.FindNode(key), m.FindValue(key), m.FindValue(os.urandom(32))):
        c.request(link.contact(A), req, NOW)
        for data, _ in c.take_outgoing():
            a.datagram_received(data, C, NOW)
        for data, _ in a.take_outgoing():
            sizes.append(len(data))
            got += [e.message for e in c.datagram_received(data, A, NOW) if isinstance(e, Answered)]
    assert len(got[0].contacts) == 20  # type: ignore[union-attr]
    assert len(got[1].records) >= 1 and got[1].next_cursor is not None  # type: ignore[union-attr]
    assert max(sizes) <= a.config.max_datagram


def test_a_forgery_reusing_a_genuine_signature_is_dropped_even_after_the_genuine_one() -> None:
    link = Link()
    a = link.add(A)
    c = link.add(C)
    key = os.urandom(32)
    publisher = Identity.generate()
    genuine = Record.create(publisher, key, b"real ad", seq=1, expires_ms=int((NOW + 60) * 1000))
    forged = Record(
        key, publisher.public_key, 2**62, genuine.expires_ms, b"EVIL ad", genuine.signature
    )
    rid = c.request(link.contact(A), m.FindValue(key), NOW)
    c.take_outgoing()
    body = encode(m.to_wire(m.Values([genuine, forged], None, []), rid))
    (got,) = c.datagram_received(a.auth.seal(body, c.identity.public_key, NOW), A, NOW)
    assert isinstance(got, Answered) and got.message == m.Values([genuine, forged], None, [])
    # Checked (and cached) after the genuine one, the "newer" forgery still fails its check.
    assert c.verified(genuine) and not c.verified(forged)
    lookup = ValueLookup(key, [], quorum=1)
    lookup.merge(got.message.records)
    assert lookup.newest(c.verified) == {genuine.publisher_id: genuine}


def test_hostile_contacts_in_an_answer_cannot_hurt_the_asker() -> None:
    link = Link()
    a = link.add(A)
    c = link.add(C)
    low_order = (2**255 - 19 - 1).to_bytes(32, "little")  # maps to an X25519 point of order 1
    hostile = [(os.urandom(32), host) for host in ("a\x00b", "evil.example", "x" * 70)]
    hostile.append((low_order, "127.0.0.1"))
    for key, host in hostile:
        rid = c.request(link.contact(A), m.FindNode(os.urandom(32)), NOW)
        c.take_outgoing()
        body = encode([m.Nodes.TYPE, rid, [[key, host, 4000]]])
        assert c.datagram_received(a.auth.seal(body, c.identity.public_key, NOW), A, NOW) == []
    # Names are refused (contacts carry IP literals), and so are keys of no one.
    assert c.stats["dropped_schema"] == 4
    # A key no pair key can be made with: asking it fails at once, with no exception.
    rid = c.request(Contact.of(low_order, "127.0.0.1", 9), m.Ping(), NOW)
    assert c.take_outgoing() == []
    assert c.on_timer(NOW) == [TimedOut(rid)]
    assert c.stats["unusable_contacts"] == 1


def test_a_relayed_first_contact_neither_enters_nor_moves_a_table_entry() -> None:
    """The first node a newcomer pings could replay that signed datagram to others, from its
    own address: they answer it, but nobody records the newcomer at the relay's address."""
    link = Link()
    newcomer, relay, victim = link.add(A), link.add(B), link.add(C)
    newcomer.request(B, m.Ping(), NOW)
    ((signed, _),) = newcomer.take_outgoing()
    relay.datagram_received(signed, A, NOW)
    relay.take_outgoing()
    victim.datagram_received(signed, B, NOW)  # relayed: arrives from B's address
    assert newcomer.node_id not in victim.routing
    introduce(link, A, C)  # the newcomer really talks to the victim
    assert newcomer.node_id in victim.routing
    victim.datagram_received(relay.auth.seal(b"", None, NOW), B, NOW)
    assert [c.addr for c in victim.routing.contacts() if c.node_id == newcomer.node_id] == [A]


def test_answers_to_an_unproven_address_are_no_larger_than_the_request() -> None:
    """A request with a spoofed source gets the victim no more bytes than it sent: the answer
    if it fits (a first FIND_NODE is padded so that it does), else a `Retry` with a cookie in
    its place, and no ping. Once the address answered us, or handed the cookie back, full size;
    a proof does not last for ever."""
    link = Link()
    a = link.add(A)
    key = os.urandom(32)
    hold_records(a, key, 30, 200, ttl=3600)
    long_contacts(a, 40)
    attacker = link.add(C)
    victim = ("198.51.100.7", 53)
    for request, kind in (
        (m.FindValue(key), m.Retry),
        (m.FindNode(key), m.Nodes),
        (m.Ping(), m.Pong),
    ):
        rid = attacker.request(link.contact(A), request, NOW)
        ((data, _),) = attacker.take_outgoing()
        a.datagram_received(data, victim, NOW)
        ((answer, dst),) = a.take_outgoing()
        assert dst == victim and len(answer) <= len(data)
        body = m.split_cookie(msgpack.unpackb(attacker.auth.open(answer, NOW).body))[0]
        got_rid, message = m.parse(body)
        assert got_rid == rid and isinstance(message, kind)
    # Once the address answered a request of a's, the same request gets a full page.
    a.request(link.contact(C), m.Ping(), NOW + 2)
    link.run(NOW + 2)
    attacker.request(link.contact(A), m.FindValue(key), NOW + 2)
    link.run(NOW + 2)
    (answer,) = link.answers(C)
    assert isinstance(answer.message, m.Values) and len(answer.message.records) > 5
    assert attacker.stats["retries"] == 0
    # Ten minutes on, the address must prove itself again, with a cookie: one more round trip.
    later = NOW + 2 + 601
    attacker.request(link.contact(A), m.FindValue(key), later)
    link.run(later)
    (answer,) = link.answers(C)
    assert isinstance(answer.message, m.Values) and len(answer.message.records) > 5
    assert attacker.stats["retries"] == 1 and a.stats["cookies_good"] == 1


def test_an_answer_from_another_address_proves_nothing_and_leaks_nothing() -> None:
    link = Link()
    a, b = link.add(A), link.add(B)
    # a's request to b's address is answered (with a cookie offered) from elsewhere.
    a.request(link.contact(B), m.Ping(), NOW)
    ((data, _),) = a.take_outgoing()
    b.datagram_received(data, A, NOW)
    ((pong, _),) = b.take_outgoing()
    events = a.datagram_received(pong, ("127.0.0.1", 999), NOW)  # relayed from another port
    # It answers the caller but proves nothing: b stays out of a's table, the cookie unused.
    assert [type(e.message) for e in events if isinstance(e, Answered)] == [m.Pong]
    assert b.node_id not in a.routing and a.take_outgoing() == []
    a.request(link.contact(B), m.Ping(), NOW, announce=True)
    link.run()  # from b's address: a hands the cookie back, and enters b's table
    assert a.node_id in b.routing and b.node_id in a.routing
    # A cookie is good only from the address it was given to.
    spoofer = ("127.0.0.1", 998)
    a.request(link.contact(B), m.FindNode(os.urandom(32)), NOW)
    ((data, _),) = a.take_outgoing()  # (it carries b's cookie for a's address)
    b.datagram_received(data, spoofer, NOW)
    assert b.stats["cookies_refused"] == 1
    ((answer, dst),) = b.take_outgoing()
    assert dst == spoofer and len(answer) <= len(data)


def test_a_proven_address_is_proven_for_its_node_only() -> None:
    """Once b's address answered a, a stranger spoofing b's address gets no full answers and
    no place in the table."""
    link = Link()
    a, b = link.add(A), link.add(B)
    a.request(link.contact(B), m.Ping(), NOW)
    link.run()
    stranger = DhtProtocol(Identity.generate(), now=NOW)
    stranger.request(link.contact(A), m.FindNode(os.urandom(32)), NOW)
    ((data, _),) = stranger.take_outgoing()
    a.datagram_received(data, B, NOW)  # spoofed: b's address
    assert stranger.node_id not in a.routing
    assert b.node_id in a.routing
    answers = a.take_outgoing()
    assert all(len(d) <= max(3 * len(data), 1700) for d, _ in answers)


def test_request_ids_are_unpredictable() -> None:
    link = Link()
    a = link.add(A)
    rids = [a.request(B, m.Ping(), NOW) for _ in range(50)]
    assert len(set(rids)) == 50
    steps = {b - a_ for a_, b in zip(rids, rids[1:])}
    assert len(steps) > 40  # not a counter


def test_a_cookie_is_good_for_two_epochs_and_a_stale_one_costs_one_retry() -> None:
    """Cookies are stateless for the node that gives them (a keyed hash of the address and the
    epoch): the asker hands its cookie back with every request; once it is stale, the answer is
    a new `Retry`, and the request goes again once with the new cookie."""
    link = Link()
    a = link.add(A)
    long_contacts(a, 40)
    key = os.urandom(32)
    hold_records(a, key, 30, 200, ttl=3600)  # (more than a padded request has room for)
    c = link.add(C, DhtConfig(client=True))  # (a client: a never takes it into its table)
    for at, retries in ((NOW, 1), (NOW + 1, 1), (NOW + 700, 2)):
        c.request(link.contact(A), m.FindValue(key), at)
        link.run(at)
        (got,) = link.answers(C)
        assert isinstance(got.message, m.Values) and len(got.message.records) > 5
        assert c.stats["retries"] == retries
    assert a.stats["cookies_refused"] == 1  # the stale one


def test_a_newcomer_closer_to_a_key_gets_its_records_at_once() -> None:
    """Kademlia's hand-over: when a node admits a newcomer that is closer than itself to a key
    it holds, it stores that key's records there (gets look at the closest nodes first)."""
    link = Link()
    a = link.add(A)
    b_identity = Identity.generate()
    # A key b is closer to than a is.
    key = bytes(x ^ y for x, y in zip(b_identity.node_id, b"\x00" * 31 + b"\x01"))
    (record,) = hold_records(a, key, 1, 100)
    far = bytes(x ^ 0xFF for x in b_identity.node_id)  # a key a is closer to: not handed over
    hold_records(a, far, 1, 100)
    b = link.add(B, identity=b_identity)
    introduce(link, B, A)  # a checks b's address, admits it, and hands over
    assert b.store.get(key, NOW) == [record]
    assert b.store.get(far, NOW) == []


def test_the_dht_core_counts_rpcs_by_outcome_and_times_each_answer() -> None:
    link = Link()
    a, b = link.add(("127.0.0.1", 1)), link.add(("127.0.0.1", 2))
    a.request(link.contact(("127.0.0.1", 2)), m.Ping(), NOW, announce=True)
    link.run(NOW + 0.02)  # answered 20 ms after it went out
    # (b's pong offers a cookie; a, announcing, hands it back at once with a ping of its own,
    # answered
    # in no time on this link)
    assert b.rpcs_received[("ping", "retry")] == 0
    assert b.rpcs_received[("ping", "answered")] == 2
    rtt = a.round_trips["ping"]
    assert rtt.count == a.rpcs_sent[("ping", "answered")] == 2
    assert rtt.sum == pytest.approx(0.02, abs=1e-6)

    a.request(("127.0.0.1", 9), m.FindNode(b.node_id), NOW)  # nobody there
    link.run(NOW)
    a.on_timer(NOW + a.config.rpc_timeout)
    assert a.rpcs_sent[("find_node", "timed_out")] == 1
    assert a.round_trips["find_node"].count == 0  # only answers are timed


def test_a_cookie_offered_again_in_answer_to_the_ping_that_handed_one_back_waits() -> None:
    """A cookie handed back and refused (the other node changed its key, or lies) and offered
    again is not handed back by another ping: one ping per request of ours, never a loop."""
    link = Link()
    a, b = link.add(A), link.add(B)
    a.request(link.contact(B), m.Ping(), NOW, announce=True)
    ((data, _),) = a.take_outgoing()
    b.datagram_received(data, A, NOW)
    ((pong, _),) = b.take_outgoing()  # with a cookie: b's table wants a
    b._proofs = AddressProofs(b.config.max_peers)  # b forgets the key it made the cookie with
    a.datagram_received(pong, B, NOW)
    link.run()
    assert b.stats["cookies_refused"] == 1 and b.stats["cookies_good"] == 0
    assert a.stats["requests_out"] == 2 and a.node_id not in b.routing
    a.request(link.contact(B), m.FindNode(os.urandom(32)), NOW)  # the next request hands it back
    link.run()
    assert b.stats["cookies_good"] == 1 and a.node_id in b.routing
