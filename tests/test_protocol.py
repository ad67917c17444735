"""The DHT protocol core, sans-I/O: cores joined by an in-memory link, time passed in by hand."""

from __future__ import annotations

import os
import random

import msgpack

from p2psched.dht import messages as m
from p2psched.dht.protocol import (
    Answered,
    DhtConfig,
    DhtProtocol,
    Event,
    RefreshDue,
    RepublishDue,
    TimedOut,
)
from p2psched.dht.records import Record, StoreLimits
from p2psched.dht.routing import Contact
from p2psched.identity import Identity
from p2psched.wire.codec import encode
from p2psched.wire.envelope import KIND_MAC, KIND_SIGNED

NOW = 1_800_000_000.0


class Link:
    """Delivers datagrams between cores by address, in order, and collects the events."""

    def __init__(self) -> None:
        self.cores: dict[tuple[str, int], DhtProtocol] = {}
        self.events: dict[tuple[str, int], list[Event]] = {}
        self.lost: list[tuple[bytes, tuple[str, int]]] = []

    def add(self, addr: tuple[str, int], config: DhtConfig | None = None, identity: Identity | None = None) -> DhtProtocol:
        core = DhtProtocol(identity or Identity.generate(), config, now=NOW, seed=1)
        self.cores[addr] = core
        self.events[addr] = []
        return core

    def contact(self, addr: tuple[str, int]) -> Contact:
        core = self.cores[addr]
        return Contact(core.node_id, addr[0], addr[1], core.identity.public_key)

    def run(self, now: float = NOW) -> None:
        for _ in range(1000):
            moved = False
            for src, core in self.cores.items():
                for data, dst in core.take_outgoing():
                    moved = True
                    if dst in self.cores:
                        self.events[dst] += self.cores[dst].datagram_received(data, src, now)
                    else:
                        self.lost.append((data, dst))
            if not moved:
                return

    def answers(self, addr: tuple[str, int]) -> list[Answered]:
        got = [e for e in self.events[addr] if isinstance(e, Answered)]
        self.events[addr] = [e for e in self.events[addr] if not isinstance(e, Answered)]
        return got


A, B, C = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)


def test_ping_by_address_then_both_tables_know_each_other() -> None:
    link = Link()
    a, b = link.add(A), link.add(B)
    rid = a.request(B, m.Ping(), NOW)
    link.run()
    (answer,) = link.answers(A)
    assert answer.rid == rid and answer.sender.node_id == b.node_id
    assert answer.message == m.Pong(A)
    assert b.node_id in a.routing and a.node_id in b.routing
    # The second exchange uses the pair key (a MAC), not a signature.
    a.request(link.contact(B), m.Ping(), NOW)
    ((data, _),) = a.take_outgoing()
    assert data[2] == KIND_MAC


def test_find_node_returns_the_closest_known_contacts() -> None:
    link = Link()
    hub = link.add(("127.0.0.1", 100))
    others = [link.add(("127.0.0.1", 200 + i)) for i in range(30)]
    for o in others:
        o.request(("127.0.0.1", 100), m.Ping(), NOW)
    link.run()
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
    record = a.publish(key, b"hello", 60.0, NOW)
    a.request(B, m.Store(record), NOW)
    link.run()
    (stored,) = link.answers(A)
    assert stored.message == m.Stored(True, "", [])
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
    forged = Record(key, victim.public_key, 9, int((NOW + 60) * 1000), b"evil", a.identity.sign(b"x"))
    a.request(B, m.Store(forged), NOW)
    link.run()
    (answer,) = link.answers(A)
    assert answer.message == m.Stored(False, "bad signature", [])
    # A malicious holder answers a FIND_VALUE with the forged record: the asker drops it.
    c = link.add(C)
    rid = c.request(link.contact(A), m.FindValue(key), NOW)
    c.take_outgoing()  # the request never reaches A: A answers as it likes
    body = encode(m.to_wire(m.Values([forged], None, []), rid))
    events = c.datagram_received(a.auth.seal(body, c.identity.public_key, NOW), A, NOW)
    (got,) = events
    assert isinstance(got, Answered) and got.message == m.Values([], None, [])
    assert c.stats["dropped_bad_records"] == 1


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
    b.request(A, m.Ping(), NOW)
    link.run()
    c.request(A, m.Ping(), NOW + 1)
    link.run(NOW + 1)  # b was heard from a second ago: no check, c waits as a replacement
    assert a.stats["requests_out"] == 0
    c.request(A, m.Ping(), NOW + 61)
    link.run(NOW + 61)  # b has been silent a minute: a pings it, b answers
    assert b.node_id in a.routing and c.node_id not in a.routing
    assert a.stats["requests_out"] == 1
    # Now b is gone: the next check times out, and c takes b's place.
    del link.cores[B]
    c.request(A, m.Ping(), NOW + 200)
    link.run(NOW + 200)
    a.on_timer(NOW + 200 + a.config.rpc_timeout)
    assert b.node_id not in a.routing and c.node_id in a.routing


def test_hostile_datagrams_are_dropped_counted_and_the_node_keeps_serving() -> None:
    link = Link()
    a, b = link.add(A), link.add(B)
    rng = random.Random(5)
    b.request(A, m.Ping(), NOW)
    link.run()
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
    cfg = DhtConfig(max_peers=64)
    link = Link()
    a = link.add(A, cfg)
    attackers = [Identity.generate() for _ in range(300)]
    for i, ident in enumerate(attackers):
        sender = DhtProtocol(ident, now=NOW)
        data = sender.auth.seal(encode(m.to_wire(m.Ping(), i)), a.identity.public_key, NOW)
        a.datagram_received(data, (f"203.0.113.{i % 250}", 5000 + i), NOW)
    a.take_outgoing()
    flooders = [c for c in a.routing.contacts() if c.host.startswith("203.0.113.")]
    assert len(flooders) <= 10  # the table-wide cap for one /24
    assert a.auth.peer_count <= 64  # replay state bounded
    assert a.stats["dropped_peer_table_full"] == 300 - 64
    # A loopback peer is unaffected by the prefix cap (once the flood's replay windows age out).
    b = link.add(B)
    b.request(A, m.Ping(), NOW + 31)
    link.run(NOW + 31)
    assert b.node_id in a.routing


def test_client_mode_nodes_are_answered_but_never_routed_through() -> None:
    link = Link()
    a = link.add(A)
    client = link.add(B, DhtConfig(client=True))
    client.request(A, m.Ping(), NOW)
    link.run()
    assert [x.message for x in link.answers(B)] == [m.Pong(B)]
    assert client.node_id not in a.routing
    assert a.node_id in client.routing  # the client still routes through servers


def test_records_expire_republish_and_buckets_refresh_on_the_clock() -> None:
    cfg = DhtConfig(maintenance_interval=1.0, refresh_interval=100.0, store=StoreLimits())
    link = Link()
    a, b = link.add(A, cfg), link.add(B)
    b.request(A, m.Ping(), NOW)
    link.run()
    key = os.urandom(32)
    a.publish(key, b"mine", 10.0, NOW)
    assert len(a.store.get(key, NOW)) == 1
    events = a.on_timer(NOW + 4.0)
    assert not [e for e in events if isinstance(e, RepublishDue)]
    events = a.on_timer(NOW + 5.0)
    (due,) = [e for e in events if isinstance(e, RepublishDue)]
    assert due.record.key == key and due.record.expires_ms == int((NOW + 15.0) * 1000)
    a.unpublish(key)
    assert not [e for e in a.on_timer(NOW + 11.0) if isinstance(e, RepublishDue)]
    assert a.store.get(key, NOW + 15.0) == []
    a.on_timer(NOW + 16.0)
    assert len(a.store) == 0 and a.stats["records_expired"] == 1
    refresh = [e for e in a.on_timer(NOW + 100.0) if isinstance(e, RefreshDue)]
    assert refresh and all(a.routing.bucket_index(e.target) >= a.routing.bucket_index(b.node_id) for e in refresh)
    assert not [e for e in a.on_timer(NOW + 101.0) if isinstance(e, RefreshDue)]


def test_find_value_answers_are_paged_under_the_datagram_limit() -> None:
    link = Link()
    a = link.add(A)
    key = os.urandom(32)
    records = [Record.create(Identity.generate(), key, os.urandom(1000), seq=1, expires_ms=int((NOW + 60) * 1000)) for _ in range(30)]
    for r in records:
        assert a.store.put(r, NOW) is None
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
    for _ in range(40):
        r = Record.create(Identity.generate(), key, os.urandom(4096), seq=1, expires_ms=int((NOW + 60) * 1000))
        a.store.put(r, NOW)
    for i in range(40):
        a.routing.observe(Contact.of(os.urandom(32), "2001:db8:aaaa:bbbb:cccc:dddd:eeee:%x" % i, 65535), NOW)
    sizes: list[int] = []
    c = link.add(C)
    for req in (m.FindNode(key), m.FindValue(key), m.FindValue(os.urandom(32))):
        c.request(A, req, NOW)
        for data, _ in c.take_outgoing():
            a.datagram_received(data, C, NOW)
        sizes += [len(data) for data, _ in a.take_outgoing()]
    assert max(sizes) <= a.config.max_datagram
