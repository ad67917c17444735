"""Finding the workers that match a need: read the need's capability keys in the DHT, check
each ad, apply the whole need.

Owns: `Discovery` (the search, and its cache); an ad as read back is `scheduler.ads`'s.
Promises: `find` answers exactly the live workers whose checked ads match the need. The DHT hands
over unexpired records with their signatures unchecked, every version holders gave; here
withdrawn, malformed and oversized ads are dropped (and counted), the need is applied to every
profile as read, and only an ad that matches has its signature checked, once per ad (not per
copy: holders' copies are one record), and never again while it is in `VerifiedAds` by its
signature. An unchecked ad decides nothing: a match is listed only once its signature checks, it
sets no cache time, and where holders gave a worker's ad in several versions, the newest whose
signature checks is its ad (a forged "newer" one does not hide the genuine one). An ad's
loopback or private addresses are kept only where this node sees peers in that kind of range (a
devnet, a lab's LAN): the holders that checked them against the publisher may lie, and an
internet node must not dial into someone's private network because an ad said so; an ad left
with no address is dropped. What was read is cached per capability for `cache_for` seconds
(never past a checked ad's expiry), so a similar need soon after costs no network round trip; a
worker that withdrew within that time may still be listed from the cache (`fresh=True` reads
anew). `explain` says why a need found no
worker, from the workers read under its capability that miss it (the nearest misses), their
ads checked first.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import trio

from p2psched.dht.node import DhtNode
from p2psched.dht.records import Record
from p2psched.resources.need import Need, nearest_misses
from p2psched.scheduler.ads import VERIFIED_ADS, VerifiedAds, WorkerAd
from p2psched.wire.address import address_kind


@dataclass(slots=True)
class _Read:
    """A worker's ad as read: its record, the ad it carries (`shown`: with only the addresses
    this node may dial), and whether the record's signature has checked yet."""

    record: Record
    ad: WorkerAd
    shown: WorkerAd
    checked: bool


@dataclass(slots=True)
class _Cached:
    """What was read under one capability, and until when it may answer: `cache_for`, or the
    first expiry of an ad checked among them (an unchecked one sets no time: it may be forged)."""

    until: float
    reads: dict[bytes, _Read]

    def checked(self, read: _Read) -> None:
        read.checked = True
        self.until = min(self.until, read.ad.expires)


class Discovery:
    def __init__(
        self,
        node: DhtNode,
        *,
        cache_for: float = 30.0,
        quorum: int = 2,
        parallel: int = 8,
        verified_ads: int = VERIFIED_ADS,
    ) -> None:
        self.node = node
        # Shards read at once: each brings up to alpha pages of records at a time, and a burst
        # larger than the socket's receive buffer would be dropped and wait out a timeout.
        self._limiter = trio.CapacityLimiter(parallel)
        self.cache_for = cache_for
        self.quorum = quorum
        self.rejected: Counter[str] = Counter()
        self.verified = VerifiedAds(verified_ads)
        self._cache: dict[str, _Cached] = {}

    async def find(self, need: Need, *, fresh: bool = False) -> list[WorkerAd]:
        """The live workers that match `need`, by node id."""
        capability, keys = need.search_keys()
        now = self.node.now()
        cached = self._cache.get(capability)
        if fresh or cached is None or cached.until <= now:
            # Good until `cache_for` is up or its first checked ad expires, whichever comes
            # first: an expired ad may well have been renewed since, and must be read again.
            # (cached once read: a find for it meanwhile reads too, rather than find nothing)
            cached = _Cached(now + self.cache_for, {})
            for worker, read in (await self._read(keys)).items():
                cached.reads[worker] = read
                if read.checked:
                    cached.checked(read)
            self._cache[capability] = cached
        now = self.node.now()
        found = [
            r.shown
            for worker, r in list(cached.reads.items())
            if r.ad.expires > now and need.matches(r.ad.profile) and self._checked(cached, worker)
        ]
        return sorted(found, key=lambda a: a.node_id)

    def explain(self, need: Need) -> str:
        """Why `find(need)` found no worker, from what it read last: the live workers under
        the need's capability and the clauses each fails."""
        cached = self._cache.get(need.search_keys()[0])
        if cached is None:
            return nearest_misses(need, [])
        now = self.node.now()
        profiles = [
            r.ad.profile
            for worker, r in list(cached.reads.items())
            if r.ad.expires > now and self._checked(cached, worker)
        ]
        return nearest_misses(need, profiles)

    def _checked(self, cached: _Cached, worker: bytes) -> bool:
        """Whether the signature of `worker`'s ad checks; a forgery is dropped (and counted)."""
        read = cached.reads[worker]
        if not read.checked:
            if not self.verified.check(read.record, read.ad):
                self.rejected["bad_signature"] += 1
                del cached.reads[worker]
                return False
            cached.checked(read)
        return True

    async def _read(self, keys: list[bytes]) -> dict[bytes, _Read]:
        """Every shard, in parallel; per worker that has one, its ad, its signature unchecked
        unless holders disagreed on its version."""
        versions: dict[bytes, dict[Record, None]] = {}

        async def get(key: bytes) -> None:
            async with self._limiter:
                for held in await self.node.get_unverified(key, quorum=self.quorum):
                    versions.setdefault(held[0].publisher_id, {}).update(dict.fromkeys(held))

        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(get, key)
        reads: dict[bytes, _Read] = {}
        kinds = {"public", *self.node.kinds_seen()}
        for worker, held in versions.items():
            newest_first = sorted(held, key=lambda r: r.version, reverse=True)
            try:
                read = self._newest(newest_first, kinds)
            except ValueError as e:
                self.rejected[str(e).split(" ", 1)[0]] += 1
                continue
            if read is not None:
                reads[worker] = read
        return reads

    def _newest(self, records: list[Record], kinds: set[str]) -> _Read | None:
        """A worker's ad from the versions of it read, newest first: the newest, unchecked, when
        all holders gave the same one; else the newest whose signature checks. None when there
        is none to list (withdrawn, forged, or no address to dial); raises ValueError for a
        malformed one."""
        disputed = len(records) > 1
        for record in records:
            ad = self.verified.get(record)
            checked = ad is not None
            if ad is None:
                try:
                    ad = WorkerAd.from_record(record)
                except ValueError:
                    if disputed and not record.verify():
                        self.rejected["bad_signature"] += 1
                        continue
                    raise
                if disputed:
                    # Holders disagree: only a version whose signature checks may stand.
                    checked = record.verify() if ad is None else self.verified.check(record, ad)
                    if not checked:
                        self.rejected["bad_signature"] += 1
                        continue
                if ad is None:
                    return None  # withdrawn
            shown = self._reachable(ad, kinds)
            return None if shown is None else _Read(record, ad, shown, checked)
        return None

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
