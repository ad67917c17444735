"""The trio shell: real UDP sockets on 127.0.0.1; timed behaviour on trio's fake clock."""

from __future__ import annotations

import os
import random
import socket

import pytest
import trio

from p2psched.dht import messages as m
from p2psched.dht.node import open_dht_node, serve
from p2psched.dht.protocol import DhtConfig
from p2psched.dht.records import Record
from p2psched.dht.routing import Contact
from p2psched.identity import Identity


async def test_put_on_one_node_get_from_another() -> None:
    async with open_dht_node(Identity.generate()) as a, open_dht_node(Identity.generate()) as b:
        assert await b.bootstrap([a.address]) == 1
        # Joined means announced: b handed back a's cookie, and a took it into its table.
        assert b.node_id in a.protocol.routing and not b.protocol.announcing()
        key = os.urandom(32)
        assert await a.put(key, b"hello", ttl=60) == 2  # b, and a itself
        (record,) = await b.get(key)
        assert record.value == b"hello" and record.publisher_id == a.node_id
        assert await b.get(os.urandom(32)) == []


async def test_serve_reports_the_running_node(nursery: trio.Nursery) -> None:
    first = await nursery.start(serve, Identity.generate())
    second = await nursery.start(
        lambda **kw: serve(Identity.generate(), bootstrap=[first.address], **kw)
    )
    assert first.address[0] == "127.0.0.1" and first.address[1] > 0
    assert first.node_id in second.protocol.routing
    assert await second.ping(first.address) == first.contact


async def test_an_unanswered_call_returns_none_after_exactly_the_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        async with open_dht_node(Identity.generate(), config=DhtConfig(rpc_timeout=2.5)) as a:
            ghost = Contact.of(Identity.generate().public_key, *silent.getsockname())
            t0 = trio.current_time()
            assert await a.call(ghost, m.Ping()) is None
            assert trio.current_time() - t0 == 2.5
            assert a.stats["rpc_timeouts"] == 1
            # A lookup through a dead seed ends after one timeout, with nothing found.
            a.protocol.routing.observe(ghost, a.now())
            t0 = trio.current_time()
            lookup = await a.find_node(os.urandom(32))
            assert lookup.closest() == [] and trio.current_time() - t0 == 2.5
    finally:
        silent.close()


async def test_garbage_datagrams_are_counted_and_the_node_keeps_serving() -> None:
    async with open_dht_node(Identity.generate()) as a, open_dht_node(Identity.generate()) as b:
        rng = random.Random(3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for i in range(200):
                raw.sendto(rng.randbytes(rng.randrange(1, 1400)), a.address)
                if i % 20 == 0:
                    await trio.sleep(0.01)  # let it read: a full socket buffer would drop them
            raw.sendto(b"\x00" * 9000, a.address)  # over the 8 KiB limit
            await trio.sleep(0.1)
        assert await b.ping(a.address) is not None
        assert a.stats["dropped_oversized"] == 1
        assert sum(v for k, v in a.stats.items() if k.startswith("dropped_")) == 201
        assert {c.node_id for c in a.protocol.routing.contacts()} <= {b.node_id}  # no garbage


async def test_records_expire_and_are_republished_on_the_fake_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    cfg = DhtConfig(maintenance_interval=1.0)
    async with (
        open_dht_node(Identity.generate(), config=cfg) as a,
        open_dht_node(Identity.generate(), config=cfg) as b,
    ):
        await b.bootstrap([a.address])
        kept, dropped = os.urandom(32), os.urandom(32)
        await a.put(kept, b"kept", ttl=10)
        await a.put(dropped, b"dropped", ttl=10)
        a.unpublish(dropped)
        await trio.sleep(30)  # three TTLs: only a republished record can still be there
        assert [r.value for r in await b.get(kept)] == [b"kept"]
        (held,) = b.protocol.store.get(kept, b.now())
        assert held.expires_ms / 1000 > b.now()
        assert await b.get(dropped) == []
        assert await a.get(dropped) == []
        assert len(b.protocol.store) == 1  # the expired one was swept, not just hidden


async def test_nodes_on_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python was built without IPv6")
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine ({e})")
    async with (
        open_dht_node(Identity.generate(), host="::1") as a,
        open_dht_node(Identity.generate(), host="::1") as b,
    ):
        await b.bootstrap([a.address])
        key = os.urandom(32)
        await a.put(key, b"v6")
        assert [r.value for r in await b.get(key)] == [b"v6"]


async def test_big_records_reach_a_first_time_asker() -> None:
    """A holder sends an unproven address nothing bigger than the amplification bound: the first
    page of 4 KiB records comes back empty, the holder checks the asker's address, and the
    asker's next page request gets them."""
    async with open_dht_node(Identity.generate()) as a, open_dht_node(Identity.generate()) as b:
        await b.bootstrap([a.address])
        key = os.urandom(32)
        await a.put(key, os.urandom(4096))
        async with open_dht_node(Identity.generate(), config=DhtConfig(client=True)) as c:
            await c.bootstrap([a.address])
            (record,) = await c.get(key, quorum=1)
            assert len(record.value) == 4096


async def test_a_client_gets_every_record_of_a_key_with_many() -> None:
    """A client node is never proven by a ping (nobody takes it into a table); the page tokens
    prove its address, so it still gets all 40 records, not the first few pages' worth."""
    async with open_dht_node(Identity.generate()) as a, open_dht_node(Identity.generate()) as b:
        await b.bootstrap([a.address])
        key = os.urandom(32)
        publishers = [Identity.generate() for _ in range(40)]
        for p in publishers:
            record = Record.create(
                p, key, os.urandom(1000), seq=1, expires_ms=int((a.now() + 600) * 1000)
            )
            assert a.protocol.store.put(record, a.now()) is None
        async with open_dht_node(Identity.generate(), config=DhtConfig(client=True)) as c:
            await c.bootstrap([a.address])
            got = await c.get(key, quorum=1)
            assert {r.publisher_id for r in got} == {p.node_id for p in publishers}
