"""Workers advertise in a real DHT swarm on 127.0.0.1; needs are answered exactly."""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

import pytest
import trio

from p2psched.dht import messages as m
from p2psched.dht.records import Record
from p2psched.dht.swarm import open_swarm
from p2psched.identity import Identity
from p2psched.resources.need import Need, capability_keys
from p2psched.resources.profile import MAX_PROFILE_BYTES, Profile
from p2psched.scheduler.discovery import Discovery
from p2psched.worker.advert import Advert
from tests.harness.profiles import NEEDS, profile, random_profile


async def test_a_swarm_of_100_workers_answers_each_need_exactly() -> None:
    rng = random.Random(11)
    async with open_swarm(110) as swarm:
        workers = swarm[10:]
        profiles = {m.node.node_id: random_profile(rng) for m in workers}
        adverts = {m.node.node_id: Advert(m.node, profiles[m.node.node_id]) for m in workers}
        limiter = trio.CapacityLimiter(10)

        async def publish(advert: Advert) -> None:
            async with limiter:
                await advert.publish()

        async with trio.open_nursery() as nursery:
            for advert in adverts.values():
                nursery.start_soon(publish, advert)
        discovery = Discovery(swarm[0].node)
        for text in NEEDS:
            need = Need.parse(text)
            truth = sorted(i for i, p in profiles.items() if need.matches(p))
            assert [a.node_id for a in await discovery.find(need)] == truth, text
        # The cache answers a similar need without the network.
        sent = swarm[0].node.stats["requests_out"]
        assert [a.node_id for a in await discovery.find(Need.parse("gpu=A100,ram>=64"))] == sorted(
            i for i, p in profiles.items() if Need.parse("gpu=A100,ram>=64").matches(p)
        )
        assert swarm[0].node.stats["requests_out"] == sent

        # A withdrawn ad disappears at once; a changed profile shows at once.
        gone, changed = list(adverts)[:2]
        await adverts[gone].withdraw()
        new = Profile(
            **{**{f: getattr(profiles[changed], f) for f in Profile.__slots__}, "ram_gb": 999.0}
        )
        await adverts[changed].update(new)
        profiles.pop(gone)
        profiles[changed] = new
        for text in ("", "ram>=999"):
            need = Need.parse(text)
            truth = sorted(i for i, p in profiles.items() if need.matches(p))
            assert [a.node_id for a in await discovery.find(need, fresh=True)] == truth


async def test_an_oversized_or_malformed_ad_is_dropped(autojump_clock: trio.abc.Clock) -> None:
    async with open_swarm(25) as swarm:
        good = swarm[1].node
        profile = random_profile(random.Random(3))
        await Advert(good, profile).publish()
        key = capability_keys(profile, good.node_id)["any"]
        # Other nodes put junk under the same capability key (the shard of their own id may
        # differ, so each puts under `key` directly, as a liar would).
        await swarm[2].node.put(key, os.urandom(MAX_PROFILE_BYTES + 1))
        await swarm[3].node.put(key, b"\x81\xa1x\x01")  # MessagePack, but no profile
        discovery = Discovery(swarm[0].node)
        found = await discovery.find(Need())
        assert [a.node_id for a in found] == [good.node_id]
        assert discovery.rejected["oversized"] == 1 and discovery.rejected["malformed"] == 1


async def test_a_dead_workers_ad_expires_and_live_ones_stay(autojump_clock: trio.abc.Clock) -> None:
    async with open_swarm(25) as swarm:
        rng = random.Random(5)
        alive, dead = swarm[1], swarm[2]
        for member in (alive, dead):
            await Advert(member.node, random_profile(rng)).publish()
        discovery = Discovery(swarm[0].node, cache_for=0)
        assert {a.node_id for a in await discovery.find(Need())} == {
            alive.node.node_id,
            dead.node.node_id,
        }
        dead.kill()  # no withdrawal: it just stops
        await trio.sleep(60)
        assert dead.node.node_id in {a.node_id for a in await discovery.find(Need())}  # not yet
        await trio.sleep(61)  # past the 120 s TTL; the live one has republished meanwhile
        assert [a.node_id for a in await discovery.find(Need())] == [alive.node.node_id]


async def test_forged_and_stale_ads_are_refused(autojump_clock: trio.abc.Clock) -> None:
    """An ad in a worker's name signed by another key, and a replay of a worker's older (validly
    signed) ad, are refused by the nodes that would keep them: discovery sees the real, newest."""
    async with open_swarm(25) as swarm:
        worker, liar = swarm[1].node, swarm[2].node
        rng = random.Random(9)
        first = random_profile(rng)
        advert = Advert(worker, first)
        await advert.publish()
        key = capability_keys(first, worker.node_id)["any"]
        (old,) = [r for r in await swarm[0].node.get(key) if r.publisher_id == worker.node_id]
        second = Profile(**{**{f: getattr(first, f) for f in Profile.__slots__}, "ram_gb": 512.0})
        await advert.update(second)
        cheap = Profile(**{**{f: getattr(first, f) for f in Profile.__slots__}, "min_price": 0.0})
        forged = Record(
            key,
            old.publisher,
            old.seq + 10**9,
            old.expires_ms,
            cheap.encode(),
            liar.protocol.identity.sign(b"x"),
        )
        holders = {
            m_.node.node_id
            for m_ in swarm
            if any(
                r.publisher_id == worker.node_id
                for r in m_.node.protocol.store.get(key, m_.node.now())
            )
        }
        assert len(holders) >= 15
        for contact in (await liar.find_node(key)).closest():
            got = await liar.call(contact, m.Store(forged))  # refused by everyone
            assert got is not None and isinstance(got[1], m.Stored) and not got[1].ok
            if contact.node_id in holders:  # a node that never saw the ad may take the old one
                got = await liar.call(contact, m.Store(old))
                assert got is not None and isinstance(got[1], m.Stored) and not got[1].ok
        (ad,) = await Discovery(swarm[0].node).find(Need())
        assert ad.node_id == worker.node_id and ad.profile == second


async def test_a_withdrawal_right_after_a_publish_wins(autojump_clock: trio.abc.Clock) -> None:
    """Sequence numbers from the clock alone would tie within a millisecond, and a tie keeps
    the ad: the withdrawal must still replace it."""
    async with open_swarm(25) as swarm:
        advert = Advert(swarm[1].node, random_profile(random.Random(2)))
        await advert.publish()
        await advert.withdraw()  # no time passes on the fake clock in between
        assert await Discovery(swarm[0].node).find(Need(), fresh=True) == []


async def test_the_cache_is_read_anew_once_an_ad_in_it_expires(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_swarm(25) as swarm:
        worker = swarm[1].node
        await Advert(worker, random_profile(random.Random(4)), ttl=20).publish()
        discovery = Discovery(swarm[0].node, cache_for=30)
        assert len(await discovery.find(Need())) == 1
        await trio.sleep(21)  # the cached copy has expired; the worker has renewed its ad
        assert [a.node_id for a in await discovery.find(Need())] == [worker.node_id]


async def test_private_ad_addresses_are_kept_only_where_such_peers_are_seen(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Holders here keep any ad (a swarm has no ad validator: as a lying holder would): a
    scheduler that sees only loopback peers dials no private address an ad names, direct or
    through a gate, and an ad left with no address is not listed."""
    async with open_swarm(25) as swarm:
        rng = random.Random(21)
        mixed, lan_only = swarm[1].node, swarm[2].node
        relayed = f"10.0.0.9:4000/relay/{lan_only.node_id.hex()}"
        profiles = {
            mixed: ("10.1.2.3:4000", "127.0.0.1:4001", "93.184.216.34:4000"),
            lan_only: ("192.168.1.20:4000", relayed),
        }
        for node, addresses in profiles.items():
            profile = dataclasses.replace(random_profile(rng), addresses=addresses)
            await Advert(node, profile).publish()
        discovery = Discovery(swarm[0].node)
        assert swarm[0].node.kinds_seen() == {"loopback"}
        (ad,) = await discovery.find(Need())
        assert ad.node_id == mixed.node_id
        assert ad.profile.addresses == ("127.0.0.1:4001", "93.184.216.34:4000")
        assert discovery.rejected["unreachable_address"] == 3


# -- signatures: checked only for ads that match, once each, and never trusted before --------


class _Holders:
    """Discovery's view of a DHT whose holders give `records` as they are, signatures
    unchecked (liars among them), on a clock the test moves."""

    def __init__(self, records: list[Record], now: float = 1_800_000_000.0) -> None:
        self.records = records
        self.t = now
        self.reads = 0  # shard reads

    def now(self) -> float:
        return self.t

    def kinds_seen(self) -> set[str]:
        return {"loopback"}

    async def get_unverified(self, key: bytes, quorum: int | None = None) -> list[list[Record]]:
        self.reads += 1
        by_publisher: dict[bytes, dict[Record, None]] = {}
        for r in self.records:  # expired ones too: a lying holder may hand them over
            if r.key == key:
                by_publisher.setdefault(r.publisher_id, {})[r] = None
        return [
            sorted(held, key=lambda r: r.version, reverse=True)
            for _, held in sorted(by_publisher.items())
        ]


_T0 = 1_800_000_000.0


def _ad(ident: Identity, seq: int = 1, ttl: float = 120.0, **kw: Any) -> Record:
    p = profile(addresses=("127.0.0.1:4000",), **kw)
    key = capability_keys(p, ident.node_id)["any"]
    return Record.create(ident, key, p.encode(), seq=seq, expires_ms=int((_T0 + ttl) * 1000))


def _forged(genuine: Record, signature: bytes | None = None, **kw: Any) -> Record:
    """`genuine`'s fields, with `kw` changed, under a signature that is not its publisher's
    over them (by default one made by another key)."""
    signature = signature or Identity.generate().sign(b"not this record")
    return dataclasses.replace(genuine, signature=signature, **kw)


async def _ids(discovery: Discovery, text: str, *, fresh: bool = True) -> list[bytes]:
    return [a.node_id for a in await discovery.find(Need.parse(text), fresh=fresh)]


async def test_only_ads_that_match_are_checked_once_each_however_many_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workers = [Identity.generate() for _ in range(6)]
    records = [_ad(w, ram_gb=64.0 if i % 2 else 32.0) for i, w in enumerate(workers)]
    checked: list[Record] = []
    real_verify = Record.verify

    def counting(record: Record) -> bool:
        checked.append(record)
        return real_verify(record)

    monkeypatch.setattr(Record, "verify", counting)
    # Every ad from two holders: the same record twice.
    discovery = Discovery(_Holders(records + records))  # type: ignore[arg-type]
    big = sorted(w.node_id for i, w in enumerate(workers) if i % 2)
    assert await _ids(discovery, "ram>=64") == big
    assert sorted(r.publisher_id for r in checked) == big  # the three that match, once each
    # A fresh read of the same ads checks none again: they are known by their signature.
    assert await _ids(discovery, "ram>=16") == sorted(w.node_id for w in workers)
    assert len(checked) == 6 and len(discovery.verified) == 6


async def test_a_forged_ad_that_matches_is_refused() -> None:
    worker, liar = Identity.generate(), Identity.generate()
    genuine = _ad(worker, ram_gb=32.0)
    # In the worker's name, the need's match, signed by someone else: alone, or as a "newer"
    # version beside the genuine one, which it must not hide.
    forged = _forged(genuine, value=profile(ram_gb=512.0, addresses=("127.0.0.1:9",)).encode())
    alone = Discovery(_Holders([forged]))  # type: ignore[arg-type]
    assert await _ids(alone, "ram>=64") == []
    assert alone.rejected["bad_signature"] == 1
    newer = _forged(forged, seq=2)
    beside = Discovery(_Holders([genuine, newer]))  # type: ignore[arg-type]
    (ad,) = await beside.find(Need(), fresh=True)
    assert ad.node_id == worker.node_id and ad.profile.ram_gb == 32.0
    assert beside.rejected["bad_signature"] == 1
    assert await _ids(beside, "ram>=64") == []
    # A forged withdrawal hides no one either.
    withdrawal = _forged(genuine, seq=3, value=b"")
    assert await _ids(Discovery(_Holders([genuine, withdrawal])), "") == [worker.node_id]  # type: ignore[arg-type]
    assert liar.node_id not in {genuine.publisher_id}


async def test_a_forged_copy_of_a_checked_ad_does_not_poison_the_cache() -> None:
    worker = Identity.generate()
    genuine = _ad(worker, ram_gb=64.0, min_price=0.02)
    holders = _Holders([genuine])
    discovery = Discovery(holders)  # type: ignore[arg-type]
    assert await _ids(discovery, "ram>=64") == [worker.node_id]
    assert discovery.verified.get(genuine) is not None
    # Its genuine signature over other fields (a lower price), and its fields under a bad
    # signature: neither passes for the ad that was checked, and neither is kept as checked.
    cheaper = _forged(
        genuine,
        genuine.signature,
        value=profile(ram_gb=64.0, min_price=0.0, addresses=("127.0.0.1:4000",)).encode(),
    )
    copy = _forged(genuine)
    for fake in (cheaper, copy, cheaper):
        holders.records = [fake]
        assert await _ids(discovery, "ram>=64") == []
        assert discovery.verified.get(fake) is None
    assert discovery.rejected["bad_signature"] == 3
    holders.records = [genuine]
    assert discovery.verified.get(genuine) is not None  # still there
    assert await _ids(discovery, "ram>=64") == [worker.node_id]


async def test_a_cached_ad_is_listed_only_for_needs_it_matches_and_never_once_expired() -> None:
    small, big = Identity.generate(), Identity.generate()
    holders = _Holders([_ad(small, ram_gb=32.0, ttl=20.0), _ad(big, ram_gb=64.0, ttl=20.0)])
    discovery = Discovery(holders, cache_for=60.0)  # type: ignore[arg-type]
    assert await _ids(discovery, "") == sorted([small.node_id, big.node_id])
    assert len(discovery.verified) == 2
    assert await _ids(discovery, "ram>=64", fresh=False) == [big.node_id]
    assert await _ids(discovery, "ram<64", fresh=False) == [small.node_id]
    holders.t += 21.0  # past both ads' expiry; a lying holder still hands them over
    assert await _ids(discovery, "", fresh=False) == []
    assert await _ids(discovery, "") == []


async def test_an_unchecked_ad_does_not_cut_the_cache_short() -> None:
    """A forged ad that expires at once, under the same capability as a genuine one, does not
    make every later need read the DHT anew; a checked one that expires does."""
    worker, victim = Identity.generate(), Identity.generate()
    genuine = _ad(worker, ram_gb=64.0, ttl=10.0)
    forged = _forged(_ad(victim, ram_gb=32.0, ttl=1.0))
    holders = _Holders([genuine, forged])
    discovery = Discovery(holders, cache_for=60.0)  # type: ignore[arg-type]
    assert await _ids(discovery, "ram>=64", fresh=False) == [worker.node_id]
    reads = holders.reads
    holders.t += 2.0
    assert await _ids(discovery, "ram>=64", fresh=False) == [worker.node_id]
    assert holders.reads == reads  # from the cache
    holders.t += 9.0  # past the checked ad's expiry, not yet past cache_for
    await discovery.find(Need.parse("ram>=64"))
    assert holders.reads == 2 * reads


async def test_a_verified_ads_cache_keeps_its_bound() -> None:
    workers = [Identity.generate() for _ in range(5)]
    discovery = Discovery(_Holders([_ad(w) for w in workers]), verified_ads=3)  # type: ignore[arg-type]
    assert len(await discovery.find(Need())) == 5
    assert len(discovery.verified) == 3
    with pytest.raises(ValueError, match="at least 1"):
        Discovery(_Holders([]), verified_ads=0)  # type: ignore[arg-type]


async def test_a_need_asked_while_it_is_being_read_waits_for_the_read_not_an_empty_answer() -> None:
    """Many requests for one model at once (a busy gateway's): each finds its workers, none
    an empty list from a read still under way."""
    worker = Identity.generate()

    class _Slow(_Holders):
        async def get_unverified(self, key: bytes, quorum: int | None = None) -> list[list[Record]]:
            await trio.sleep(0.01)  # (a DHT read takes round trips)
            return await super().get_unverified(key, quorum)

    discovery = Discovery(_Slow([_ad(worker, ram_gb=64.0)]), cache_for=60.0)  # type: ignore[arg-type]
    found: list[list[bytes]] = []

    async def ask() -> None:
        found.append(await _ids(discovery, "ram>=64", fresh=False))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(ask)
    assert found == [[worker.node_id]] * 3
