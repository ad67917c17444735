"""Throwaway identities against discovery, on real DHT nodes over loopback: 512 Sybil ads (ids
at test difficulty, ground into a worker's shard) from one /24 do not keep the worker's ad out of
its key at the holders, and the scheduler still finds the worker; identities without work and
values that are no ad are not stored at all."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from p2psched.dht import messages as m
from p2psched.dht.node import DhtNode, open_dht_node
from p2psched.dht.protocol import DhtConfig
from p2psched.dht.records import Record
from p2psched.dht.routing import Contact
from p2psched.identity import Identity, id_has_work
from p2psched.node.node import open_node
from p2psched.resources.need import MAX_AD_LIFETIME, Need, capability_keys
from tests.harness.network import ECHO, MACHINE
from tests.harness.profiles import profile

ATTACKER_HOST = "127.0.1.1"  # another /24 than the honest nodes' 127.0.0.1
SYBILS = 512


def sybil_ad(key: bytes) -> Record:
    """An ad that a holder takes: a well-formed profile, signed, under a key its (ground)
    identity really publishes it under, living as long as a holder allows."""
    for _ in range(10_000):
        sybil = Identity.generate()
        if capability_keys(profile(), sybil.node_id)["any"] == key:
            value = profile(addresses=(f"{ATTACKER_HOST}:9",)).encode()
            expires = int((time.time() + MAX_AD_LIFETIME - 5) * 1000)
            return Record.create(sybil, key, value, seq=1, expires_ms=expires)
    raise AssertionError("no identity landed in the shard")


async def store_everywhere(attacker: DhtNode, holders: list[Contact], record: Record) -> int:
    stored = 0
    for holder in holders:
        got = await attacker.call(holder, m.Store(record))
        stored += got is not None and isinstance(got[1], m.Stored) and got[1].ok
    return stored


async def test_sybil_ads_do_not_keep_a_real_worker_out_of_its_key(tmp_path: Path) -> None:
    worker_id = Identity.generate()
    key = capability_keys(profile(), worker_id.node_id)["any"]
    with trio.fail_after(240):
        async with AsyncExitStack() as stack:
            gate = await stack.enter_async_context(
                open_node(Identity.generate(), tmp_path / "gate")
            )
            seeds = [gate.dht.address]
            attacker = await stack.enter_async_context(
                open_dht_node(
                    Identity.generate(), host=ATTACKER_HOST, config=DhtConfig(client=True)
                )
            )
            assert await attacker.bootstrap(seeds) == 1
            holders = attacker.protocol.routing.closest(key, 20)
            # The key fills with Sybil ads before the worker first publishes.
            stored = sum(
                [await store_everywhere(attacker, holders, sybil_ad(key)) for _ in range(SYBILS)]
            )
            assert stored == SYBILS * len(holders)
            worker = await stack.enter_async_context(
                open_node(worker_id, tmp_path / "w", seeds=seeds, worker=ECHO, detected=MACHINE)
            )
            held = gate.dht.protocol.store.get(key, gate.dht.now())
            assert worker_id.node_id in {r.publisher_id for r in held}
            assert len(held) <= 1 + gate.dht.protocol.store.limits.max_per_prefix_per_key
            scheduler = await stack.enter_async_context(
                open_node(Identity.generate(), tmp_path / "s", seeds=seeds, dht_client=True)
            )
            found = await scheduler.discovery.find(Need.parse("cpus>=1"), fresh=True)
            assert worker.identity.node_id in {ad.node_id for ad in found}


async def test_free_identities_and_values_that_are_no_ad_are_not_stored(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            gate = await stack.enter_async_context(
                open_node(Identity.generate(), tmp_path / "gate")
            )
            free = Identity.generate(0)
            while id_has_work(free.node_id, 1):  # an id that shows no work at all
                free = Identity.generate(0)
            lazy = await stack.enter_async_context(open_dht_node(free, host=ATTACKER_HOST))
            await lazy.bootstrap([gate.dht.address])
            await lazy.ping(gate.dht.address)  # a server: the gate would check and admit it
            assert free.node_id not in gate.dht.protocol.routing
            assert gate.dht.protocol.stats["ids_without_work"] > 0
            holder = Contact.of(gate.identity.public_key, *gate.dht.address)
            good = sybil_ad(capability_keys(profile(), Identity.generate().node_id)["any"])
            got = await lazy.call(holder, m.Store(good))
            assert got is not None and isinstance(got[1], m.Stored) and not got[1].ok
            assert "puzzle" in got[1].reason

            worker = await stack.enter_async_context(
                open_dht_node(
                    Identity.generate(), host=ATTACKER_HOST, config=DhtConfig(client=True)
                )
            )
            await worker.bootstrap([gate.dht.address])
            junk = Record.create(
                Identity.generate(), good.key, b"junk", seq=1, expires_ms=good.expires_ms
            )
            got = await worker.call(holder, m.Store(junk))
            assert got is not None and isinstance(got[1], m.Stored) and not got[1].ok
            assert got[1].reason.startswith("not a worker's ad")
            long = Record.create(
                Identity.generate(),
                good.key,
                b"",
                seq=1,
                expires_ms=int((time.time() + 3600) * 1000),
            )
            got = await worker.call(holder, m.Store(long))
            assert got is not None and isinstance(got[1], m.Stored) and not got[1].ok
            assert "at most" in got[1].reason
