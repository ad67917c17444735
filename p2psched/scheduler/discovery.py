"""Finding the workers that match a need: read the need's capability keys in the DHT, check
each ad, apply the whole need.

Owns: `Discovery` (the search, and its cache); an ad as read back is `scheduler.ads`'s.
Promises: `find` answers exactly the live workers whose checked ads match the need: the DHT hands
over only signed, unexpired, newest records; here withdrawn, malformed and oversized ads are
dropped (and counted), and the need is applied to every profile. An ad's loopback or private
addresses are kept only where this node sees peers in that kind of range (a devnet, a lab's LAN):
the holders that checked them against the publisher may lie, and an internet node must not dial
into someone's private network because an ad said so; an ad left with no address is dropped. What
was read is cached per capability for `cache_for` seconds (never past an ad's own expiry), so a
similar need soon after costs no network round trip; a worker that withdrew within that time may
still be listed from the cache (`fresh=True` reads anew). `explain` says why a need found no
worker, from the workers read under its capability that miss it (the nearest misses).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import trio

from p2psched.dht.node import DhtNode
from p2psched.dht.records import Record
from p2psched.resources.need import Need, nearest_misses
from p2psched.scheduler.ads import WorkerAd
from p2psched.wire.address import address_kind


class Discovery:
    def __init__(
        self, node: DhtNode, *, cache_for: float = 30.0, quorum: int = 2, parallel: int = 8
    ) -> None:
        self.node = node
        # Shards read at once: each brings up to alpha pages of records at a time, and a burst
        # larger than the socket's receive buffer would be dropped and wait out a timeout.
        self._limiter = trio.CapacityLimiter(parallel)
        self.cache_for = cache_for
        self.quorum = quorum
        self.rejected: Counter[str] = Counter()
        self._cache: dict[str, tuple[float, dict[bytes, WorkerAd | None]]] = {}

    async def find(self, need: Need, *, fresh: bool = False) -> list[WorkerAd]:
        """The live workers that match `need`, by node id."""
        capability, keys = need.search_keys()
        now = self.node.now()
        cached = self._cache.get(capability)
        if fresh or cached is None or cached[0] <= now:
            ads = await self._read(keys)
            # Good until `cache_for` is up or its first ad expires, whichever comes first: an
            # expired ad may well have been renewed since, and must be read again.
            expiries = [a.expires for a in ads.values() if a is not None]
            self._cache[capability] = (min([now + self.cache_for, *expiries]), ads)
        else:
            ads = cached[1]
        now = self.node.now()
        found = [
            a for a in ads.values() if a is not None and a.expires > now and need.matches(a.profile)
        ]
        return sorted(found, key=lambda a: a.node_id)

    def explain(self, need: Need) -> str:
        """Why `find(need)` found no worker, from what it read last: the live workers under
        the need's capability and the clauses each fails."""
        cached = self._cache.get(need.search_keys()[0])
        now = self.node.now()
        ads = cached[1].values() if cached is not None else ()
        return nearest_misses(need, [a.profile for a in ads if a is not None and a.expires > now])

    async def _read(self, keys: list[bytes]) -> dict[bytes, WorkerAd | None]:
        """Every shard, in parallel; per worker, the newest ad (or its withdrawal)."""
        records: list[Record] = []

        async def get(key: bytes) -> None:
            async with self._limiter:
                records.extend(await self.node.get(key, quorum=self.quorum))

        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(get, key)
        newest: dict[bytes, Record] = {}
        for r in records:
            held = newest.get(r.publisher_id)
            if held is None or r.version > held.version:
                newest[r.publisher_id] = r
        ads: dict[bytes, WorkerAd | None] = {}
        kinds = {"public", *self.node.kinds_seen()}
        for worker, r in newest.items():
            try:
                ad = WorkerAd.from_record(r)
            except ValueError as e:
                self.rejected[str(e).split(" ", 1)[0]] += 1
                continue
            if ad is None:
                ads[worker] = None  # withdrawn
            elif (reachable := self._reachable(ad, kinds)) is not None:
                ads[worker] = reachable
        return ads

    def _reachable(self, ad: WorkerAd, kinds: set[str]) -> WorkerAd | None:
        """`ad` with only its addresses in `kinds` of range; None if none is left."""
        addresses = ad.profile.addresses
        keep = tuple(a for a in addresses if address_kind(a) in kinds)
        if len(keep) == len(addresses):
            return ad
        self.rejected["unreachable_address"] += len(addresses) - len(keep)
        if not keep:
            return None
        return dataclasses.replace(ad, profile=dataclasses.replace(ad.profile, addresses=keep))
