"""The pure iterative lookup, driven over an in-memory graph of routing tables."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable

import pytest
import trio

from p2psched.dht.lookup import Answer, Lookup, Query, ValueLookup
from p2psched.dht.records import Record
from p2psched.dht.routing import Contact, RoutingTable, as_int
from p2psched.dht.traverse import run_lookup
from p2psched.identity import Identity

K = 20


class Graph:
    """N nodes, each with a real routing table that has seen every other node."""

    def __init__(self, n: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.contacts = [
            Contact(rng.randbytes(32), "127.0.0.1", 1000 + i, rng.randbytes(32)) for i in range(n)
        ]
        self.tables: dict[bytes, RoutingTable] = {}
        for c in self.contacts:
            t = RoutingTable(c.node_id, k=K)
            for other in rng.sample(self.contacts, len(self.contacts)):
                t.observe(other, 0.0)
            self.tables[c.node_id] = t
        self.dead: set[bytes] = set()
        self.asked: list[bytes] = []

    def answer(self, asker: bytes, query: Query, target: bytes) -> Answer | None:
        self.asked.append(query.contact.node_id)
        if query.contact.node_id in self.dead:
            return None
        return Answer(self.tables[query.contact.node_id].closest(target, K, exclude=asker))

    def truth(self, target: bytes, exclude: bytes) -> list[bytes]:
        live = [
            c.node_id for c in self.contacts if c.node_id not in self.dead and c.node_id != exclude
        ]
        return sorted(live, key=lambda i: as_int(i) ^ as_int(target))[:K]


def drive(lookup: Lookup, answer: callable[[Query], Answer | None]) -> int:  # type: ignore[valid-type]
    """Run a lookup synchronously, answering queries in the order sent; returns the highest
    number of queries that were outstanding at once."""
    outstanding: list[Query] = []
    most = 0
    for _ in range(10_000):
        outstanding += lookup.next_queries()
        most = max(most, len(outstanding))
        if lookup.finished or not outstanding:
            break
        query = outstanding.pop(0)
        lookup.on_answer(query, answer(query))
    return most


def test_lookup_finds_the_true_k_closest_from_every_node() -> None:
    g = Graph(500)
    rng = random.Random(1)
    for start in rng.sample(g.contacts, 50):
        target = rng.randbytes(32)
        table = g.tables[start.node_id]
        lookup = Lookup(target, table.closest(target, K), k=K, alpha=3, own_id=start.node_id)
        most = drive(lookup, lambda q, s=start, t=target: g.answer(s.node_id, q, t))
        assert lookup.finished
        assert [c.node_id for c in lookup.closest()] == g.truth(target, start.node_id)
        assert most <= 3
        assert lookup.hops >= 1


def test_lookup_routes_around_dead_nodes() -> None:
    g = Graph(400)
    rng = random.Random(2)
    g.dead = {c.node_id for c in rng.sample(g.contacts, 80)}
    live = [c for c in g.contacts if c.node_id not in g.dead]
    starts = rng.sample(live, 40)
    targets = [rng.randbytes(32) for _ in starts]

    def recall() -> float:
        hits = 0
        for start, target in zip(starts, targets):
            table = g.tables[start.node_id]
            lookup = Lookup(target, table.closest(target, K), k=K, alpha=3, own_id=start.node_id)
            drive(lookup, lambda q, s=start, t=target: g.answer(s.node_id, q, t))
            got = {c.node_id for c in lookup.closest()}
            assert got and not got & g.dead  # only nodes that answered
            hits += len(got & set(g.truth(target, start.node_id)))
        return hits / (K * len(starts))

    # While tables still list the dead, every answer carries fewer live contacts, so a few of
    # the true closest can stay hidden behind them.
    assert recall() >= 0.85
    # Once tables have dropped the dead (as unanswered RPCs make them do), recall is exact.
    for table in g.tables.values():
        for c in g.contacts:
            if c.node_id in g.dead:
                table.failed(c.node_id, c.addr, 1.0)
                table.failed(c.node_id, c.addr, 1.0)
    assert recall() == 1.0


def test_lookup_with_no_seeds_is_finished_and_empty() -> None:
    lookup = Lookup(os.urandom(32), [], k=K)
    assert lookup.finished
    assert lookup.next_queries() == []
    assert lookup.closest() == []


def test_lookup_never_asks_itself_or_anyone_twice() -> None:
    g = Graph(200)
    start = g.contacts[0]
    target = os.urandom(32)
    lookup = Lookup(target, g.contacts, k=K, alpha=3, own_id=start.node_id)
    drive(lookup, lambda q, s=start, t=target: g.answer(s.node_id, q, t))
    assert start.node_id not in g.asked
    assert len(g.asked) == len(set(g.asked))


def _records(key: bytes, n: int) -> list[Record]:
    ids = [Identity.generate() for _ in range(n)]
    return [Record.create(i, key, b"ad %d" % j, seq=1, expires_ms=2**40) for j, i in enumerate(ids)]


def test_value_lookup_pages_through_a_holder_and_keeps_the_newest_versions() -> None:
    key = os.urandom(32)
    records = sorted(_records(key, 7), key=lambda r: r.publisher_id)
    holder = Contact(os.urandom(32), "127.0.0.1", 1, os.urandom(32))
    stale_holder = Contact(os.urandom(32), "127.0.0.1", 2, os.urandom(32))
    ident = Identity.generate()
    old = Record.create(ident, key, b"old", seq=1, expires_ms=2**40)
    new = Record.create(ident, key, b"new", seq=2, expires_ms=2**40)
    other_key = _records(os.urandom(32), 1)[0]

    def answer(q: Query) -> Answer:
        if q.contact == stale_holder:
            return Answer([], [old, other_key], None)
        pages = [records[0:3] + [new], records[3:6], records[6:]]
        index = 0 if q.cursor is None else int(q.cursor[0])
        nxt = bytes([index + 1]) + bytes(31) if index + 1 < len(pages) else None
        return Answer([], pages[index], nxt)

    lookup = ValueLookup(key, [holder, stale_holder], k=K, alpha=3, quorum=2)
    drive(lookup, answer)
    assert lookup.finished
    got = lookup.newest(Record.verify)
    assert {r.value for r in got.values()} == {r.value for r in records} | {b"new"}
    assert other_key.publisher_id not in got  # a record for another key is not taken
    assert holder in lookup.holders and stale_holder in lookup.holders
    # Every distinct version is kept, unchecked: a "newer" one that is forged hides nothing.
    assert set(lookup.versions[ident.node_id]) == {old, new}
    forged = dataclasses.replace(new, seq=3, signature=ident.sign(b"another record"))
    lookup.merge([forged])
    assert lookup.newest(Record.verify)[ident.node_id] == new


def _asked_until_done(alpha: int, held_here: bool) -> int:
    """A quorum-2 lookup among 10 holders of one record (the looking node one too, if
    `held_here`): how many queries it sent until it was done."""
    key = os.urandom(32)
    rec = _records(key, 1)
    holders = [Contact(os.urandom(32), "127.0.0.1", i, os.urandom(32)) for i in range(10)]
    lookup = ValueLookup(key, holders, k=K, alpha=alpha, quorum=2)
    own = Contact(os.urandom(32), "127.0.0.1", 99, os.urandom(32))
    lookup.held_here(own, rec if held_here else [])
    asked = 0

    def answer(q: Query) -> Answer:
        nonlocal asked
        asked += 1
        return Answer([], rec, None)

    drive(lookup, answer)
    assert lookup.finished and len(lookup.holders) == 2
    return asked


def test_value_lookup_stops_at_its_quorum() -> None:
    assert _asked_until_done(alpha=3, held_here=False) <= 3


def test_once_a_holder_answered_a_value_lookup_asks_only_what_its_quorum_still_needs() -> None:
    """Three queries out among holders: the first answer is a holder, so the quorum of two
    needs one more, and two are still out; no fourth query goes (it would only be cancelled)."""
    key = os.urandom(32)
    rec = _records(key, 1)
    holders = [Contact(os.urandom(32), "127.0.0.1", i, os.urandom(32)) for i in range(10)]
    lookup = ValueLookup(key, holders, k=K, alpha=3, quorum=2)
    most = drive(lookup, lambda q: Answer([], rec, None))
    assert lookup.finished and len(lookup.holders) == 2
    assert most == 3 and lookup.queries_sent == 3


def test_a_looking_node_that_holds_the_key_is_one_holder_of_its_quorum() -> None:
    assert _asked_until_done(alpha=1, held_here=False) == 2
    assert _asked_until_done(alpha=1, held_here=True) == 1


async def test_async_driver_times_out_dead_nodes_on_the_fake_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Dead nodes cost one RPC timeout each, in parallel, and never more than alpha calls run."""
    g = Graph(300)
    rng = random.Random(3)
    g.dead = {c.node_id for c in rng.sample(g.contacts, 60)}
    start = next(c for c in g.contacts if c.node_id not in g.dead)
    target = rng.randbytes(32)
    running = most = 0

    dead_asked = 0

    async def call(q: Query) -> Answer | None:
        nonlocal running, most, dead_asked
        running += 1
        most = max(most, running)
        try:
            if q.contact.node_id in g.dead:
                dead_asked += 1
                await trio.sleep(5)  # never answers in time
                return None
            await trio.sleep(0.01)
            return g.answer(start.node_id, q, target)
        finally:
            running -= 1

    async def call_with_timeout(q: Query) -> Answer | None:
        with trio.move_on_after(1.0):
            return await call(q)
        return None

    table = g.tables[start.node_id]
    t0 = trio.current_time()
    lookup = await run_lookup(
        Lookup(target, table.closest(target, K), k=K, alpha=3, own_id=start.node_id),
        call_with_timeout,
    )
    elapsed = trio.current_time() - t0
    got = {c.node_id for c in lookup.closest()}
    assert len(got) >= K // 2 and not got & g.dead
    assert most <= 3
    # Dead nodes cost a 1.0 s timeout each, but in parallel with the live ones: the lookup
    # takes at least one timeout and far less than one per dead node asked.
    assert dead_asked >= 2
    assert 1.0 <= elapsed < dead_asked * 1.0
    assert running == 0  # nothing left running after the lookup returned


def _rounds_until_done(lookup: Lookup, answer: Callable[[Query], Answer | None]) -> int:
    """Drive `lookup` in rounds, every query out answered (or failed) at once: as queries to
    dead peers all time out together, a round costs one request timeout. How many it took."""
    for rounds in range(1000):
        out = lookup.next_queries()
        if lookup.finished or not out:
            return rounds
        for query in out:
            lookup.on_answer(query, answer(query))
    raise AssertionError("the lookup never ended")


@pytest.mark.parametrize("held_here", [True, False])
def test_dead_peers_nearest_a_key_cost_a_value_lookup_no_more_than_alpha_at_a_time(
    held_here: bool,
) -> None:
    # Peers nearest the key that never answer (gone, or made up by a peer that fed them to the
    # lookup) each cost a request timeout. Once a holder answered (the looking node itself, or
    # a fast one that also feeds the dead) a quorum of two needs one more; asking one at a time
    # would take a timeout per dead peer, and past `lookup_timeout` the get returns only what
    # the first holder gave.
    key = os.urandom(32)
    rec = _records(key, 1)
    dead = [
        Contact(key[:-2] + i.to_bytes(2, "big"), "127.0.0.1", i, os.urandom(32))
        for i in range(1, 13)
    ]
    holders = [Contact(os.urandom(32), "127.0.0.1", 100 + i, os.urandom(32)) for i in range(3)]
    near = Contact(key, "127.0.0.1", 99, os.urandom(32))  # the nearest: a holder
    lookup = ValueLookup(key, [*dead, *holders, *([] if held_here else [near])], k=K, quorum=2)
    lookup.held_here(
        Contact(os.urandom(32), "127.0.0.1", 1, os.urandom(32)), rec if held_here else []
    )

    def answer(query: Query) -> Answer | None:
        if query.contact in dead:
            return None
        return Answer(dead if query.contact == near else [], rec, None)

    rounds = _rounds_until_done(lookup, answer)
    assert len(lookup.holders) >= 2
    assert rounds <= 1 + 12 // 3 + 1  # a round to find a failure, the dead by alpha, a holder
