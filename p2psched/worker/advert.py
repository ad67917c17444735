"""A worker's ad in the DHT: its signed profile under each of its capability keys.

Owns: publishing, updating and withdrawing this worker's ad.
Promises: the ad is a DHT record signed by the worker's identity key, with a sequence number and
an expiry of `ttl` (the DHT republishes it every half TTL). A changed profile is published at
once, but at most once per `min_interval`; keys the new profile no longer has are withdrawn.
Withdrawing stores an empty, newer record under every key, so it replaces the ad at once and
outlives it; a worker that dies drops out when its ad expires.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from p2psched.dht.node import DhtNode
from p2psched.resources.need import AD_TTL, capability_keys
from p2psched.resources.profile import Profile
from p2psched.wire.address import ad_address_problem

WITHDRAWN = b""  # the value of a withdrawal record


class Advert:
    def __init__(
        self, node: DhtNode, profile: Profile, *, ttl: float = AD_TTL, min_interval: float = 5.0
    ) -> None:
        self.node = node
        self.profile = profile
        self.ttl = ttl
        self.min_interval = min_interval
        self._keys: dict[str, bytes] = {}
        self._last = -math.inf
        self._seq = 0
        self._lock = trio.Lock()

    @property
    def capabilities(self) -> list[str]:
        return list(self._keys)

    async def publish(self) -> dict[str, int]:
        """Store the ad under every capability key; how many nodes took it, per capability."""
        async with self._lock:
            return await self._publish(self.profile)

    async def update(self, profile: Profile) -> None:
        """Publish a changed profile: at once, or, if the last publish was less than
        `min_interval` ago, as soon as that has passed."""
        if profile != self.profile:
            await self._paced(lambda _: profile)

    async def amend(self, **changes: Any) -> None:
        """Publish the current profile with these fields changed (paced as `update` is).
        Changes made from several tasks at once (free slots, a new relay address) all land:
        each applies to the profile as it is when its turn comes."""
        await self._paced(lambda current: replace(current, **changes))

    async def _paced(self, change: Callable[[Profile], Profile]) -> None:
        async with self._lock:
            wait = self._last + self.min_interval - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            profile = change(self.profile)
            if profile != self.profile:
                await self._publish(profile)

    async def withdraw(self) -> None:
        async with self._lock:
            await self._withdraw(list(self._keys.values()))
            self._keys = {}

    def _next_seq(self) -> int:
        """Milliseconds since the epoch (so a restarted worker still counts up), and always
        above the last: a withdrawal in the same millisecond as a publish must still win."""
        self._seq = max(self._seq + 1, int(self.node.now() * 1000))
        return self._seq

    async def _publish(self, profile: Profile) -> dict[str, int]:
        bad = [p for a in profile.addresses if (p := ad_address_problem(a, None)) is not None]
        if bad:  # holders and schedulers would refuse it: say so here, where it can be fixed
            raise ValueError(f"this worker's ad cannot be published: {'; '.join(bad)}")
        value = profile.encode()
        keys = capability_keys(profile, self.node.node_id)
        stored: dict[str, int] = {}
        seq = self._next_seq()
        previous, self._keys = self._keys, {**self._keys, **keys}  # a withdrawal now covers all

        async def put(name: str, key: bytes) -> None:
            stored[name] = await self.node.put(key, value, ttl=self.ttl, seq=seq)

        async with trio.open_nursery() as nursery:
            for name, key in keys.items():
                nursery.start_soon(put, name, key)
        gone = [key for name, key in previous.items() if name not in keys]
        await self._withdraw(gone)
        self._keys = keys
        self.profile, self._last = profile, trio.current_time()
        return stored

    async def _withdraw(self, keys: list[bytes]) -> None:
        seq = self._next_seq()

        async def clear(key: bytes) -> None:
            await self.node.put(key, WITHDRAWN, ttl=self.ttl, seq=seq)
            self.node.unpublish(key)  # nothing to republish: it only has to outlive the ad

        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(clear, key)
