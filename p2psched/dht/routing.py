"""The Kademlia routing table: k-buckets by XOR distance, with ping-before-evict and eclipse limits.

Owns: which contacts this node routes through, per bucket a replacement cache, per bucket and per
table the count of contacts sharing one IP prefix.
Promises: pure and synchronous. A full bucket never drops a live contact for a newcomer: the table
asks its owner to ping the least recently seen one, and only a failed ping evicts it. No bucket
holds more than `bucket_ip_limit` and no table more than `table_ip_limit` contacts from one /24
(IPv4) or /48 (IPv6) of the public internet; loopback, LAN addresses (`is_lan`) and the networks
an operator trusts (`TrustedNetworks`) are exempt, so a local swarm and a lab on one private /24
work at any size. Memory is bounded by 256 × (k + replacements) contacts.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import ipaddress
import random
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TypeAlias

from p2psched.identity import node_id_of
from p2psched.wire.address import ip_of, prefix, range_kind

ID_BITS = 256


@dataclass(frozen=True, slots=True)
class Contact:
    """A node and where to reach it. The node id is the hash of the public key (`of` makes it
    so), and the public key is what the pair key for authenticating datagrams is derived from."""

    node_id: bytes
    host: str
    port: int
    public_key: bytes

    @classmethod
    def of(cls, public_key: bytes, host: str, port: int) -> Contact:
        return cls(node_id_of(public_key), host, port, public_key)

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __repr__(self) -> str:
        return f"Contact({self.node_id.hex()[:12]}, {self.host}:{self.port})"


def as_int(node_id: bytes) -> int:
    return int.from_bytes(node_id, "big")


def distance(a: bytes, b: bytes) -> int:
    return as_int(a) ^ as_int(b)


IpNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# Addresses one organisation hands out on its own links, as go-ethereum's `AddrIsLAN` counts
# them: the RFC 1918 private ranges, link-local, and IPv6 unique-local (RFC 4193). A stranger
# on the internet cannot be heard from at one of these. Not CGNAT's 100.64.0.0/10 (RFC 6598):
# a carrier shares it among subscribers who do not trust each other; an operator whose overlay
# uses it (Tailscale does) names it in `TrustedNetworks`.
LAN_NETWORKS: tuple[IpNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
    + ("fc00::/7", "fe80::/10")
)


@functools.lru_cache(maxsize=4096)
def _address(host: str) -> IpAddress | None:
    """`host` as an IP address, without its zone (fe80::1%eth0: the zone is no part of it)."""
    return ip_of(host.partition("%")[0])


@functools.lru_cache(maxsize=4096)
def is_lan(host: str) -> bool:
    """Whether `host` is a loopback or LAN address (`LAN_NETWORKS`): per-prefix limits that
    exist against strangers on the internet need not count it."""
    ip = _address(host)
    return ip is not None and (ip.is_loopback or any(ip in net for net in LAN_NETWORKS))


@functools.lru_cache(maxsize=4096)
def ip_prefix(host: str) -> str | None:
    """The prefix that eclipse limits count by; None for loopback (exempt) and non-IP hosts."""
    if range_kind(host) == "loopback":
        return None
    return prefix(host, 24, 48)


@functools.lru_cache(maxsize=4096)
def source_prefix(host: str) -> str:
    """The prefix that flood limits count by, loopback included (a devnet stays far below
    them); a host that is not an IP literal counts as itself. Cached: a flood comes from the
    same few prefixes again and again."""
    return prefix(host, 24, 48) or host


@dataclass(frozen=True, slots=True)
class TrustedNetworks:
    """The peers exempt from per-prefix limits: loopback always; LAN addresses unless `lan` is
    off (a LAN shared with strangers, a campus network); and the `networks` an operator names
    (`--trusted-net`). Every other address keeps the limits of its /24 or /48."""

    lan: bool = True
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, names: list[str] | tuple[str, ...], *, lan: bool = True) -> TrustedNetworks:
        """From CIDR texts such as "100.64.0.0/10"; `ValueError` names the one that is not."""
        networks = []
        for name in names:
            try:
                networks.append(ipaddress.ip_network(name.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted network {name!r} is not an IP network (for example 100.64.0.0/10)"
                ) from None
        return cls(lan, tuple(networks))

    def trusts(self, host: str) -> bool:
        """Whether per-prefix limits (of the routing table, of request rates) spare `host`."""
        ip = _address(host)
        if ip is None:
            return False
        if ip.is_loopback or (self.lan and is_lan(host)):
            return True
        return any(ip in net for net in self.networks)

    def capped_prefix(self, host: str) -> str | None:
        """The prefix per-prefix limits count `host` under; None when they do not apply."""
        prefix = ip_prefix(host)
        return None if prefix is None or self.trusts(host) else prefix


@dataclass(slots=True)
class _Entry:
    contact: Contact
    int_id: int
    prefix: str | None
    last_seen: float
    fails: int = 0


@dataclass(slots=True)
class _Bucket:
    entries: OrderedDict[bytes, _Entry] = field(default_factory=OrderedDict)  # oldest first
    replacements: OrderedDict[bytes, Contact] = field(default_factory=OrderedDict)
    checking: bytes | None = None  # the entry we asked our owner to ping
    prefixes: Counter[str] = field(default_factory=Counter)


class RoutingTable:
    def __init__(
        self,
        own_id: bytes,
        *,
        k: int = 20,
        replacements: int = 10,
        bucket_ip_limit: int | None = 2,
        table_ip_limit: int | None = 10,
        max_fails: int = 2,
        recently_seen: float = 60.0,
        trusted: TrustedNetworks = TrustedNetworks(),
        now: float = 0.0,
    ) -> None:
        self.own_id = own_id
        self._own = as_int(own_id)
        self.k = k
        self.replacement_size = replacements
        self.bucket_ip_limit = bucket_ip_limit
        self.table_ip_limit = table_ip_limit
        self.trusted = trusted
        self.max_fails = max_fails
        self.recently_seen = recently_seen
        # Buckets exist once something falls in them: in a network of N nodes only about
        # log2(N) of the 256 ever do, and empty ones would cost most of a node's memory.
        self._buckets: dict[int, _Bucket] = {}
        self._last_lookup: dict[int, float] = {}
        self._started = now
        self._all: dict[bytes, _Entry] = {}
        self._occupied: list[int] = []  # indices of non-empty buckets, ascending
        self._prefixes: Counter[str] = Counter()
        self.refused_by_ip = 0

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, node_id: bytes) -> bool:
        return node_id in self._all

    def contacts(self) -> list[Contact]:
        return [e.contact for e in self._all.values()]

    def seen(self) -> list[tuple[Contact, float, int]]:
        """Every contact with when it was last heard from and its failures in a row."""
        return [(e.contact, e.last_seen, e.fails) for e in self._all.values()]

    def bucket_index(self, node_id: bytes) -> int:
        return (self._own ^ as_int(node_id)).bit_length() - 1

    def observe(self, contact: Contact, now: float) -> Contact | None:
        """Note that `contact` proved itself alive just now.

        Returns a contact the owner should ping (the least recently seen of a full bucket, if it
        has been silent for `recently_seen` seconds), or None.
        """
        if contact.node_id == self.own_id:
            return None
        bucket = self._bucket(self.bucket_index(contact.node_id))
        entry = bucket.entries.get(contact.node_id)
        if entry is not None:
            if entry.contact.addr == contact.addr:
                entry.last_seen, entry.fails = now, 0
                bucket.entries.move_to_end(contact.node_id)
            # Heard at another address: the entry stays where it is. Anyone who relays a node's
            # datagram could claim it moved; a node that really moved re-enters at its new
            # address once the old one has failed.
            return None
        prefix = self.trusted.capped_prefix(contact.host)
        if not self._ip_allows(bucket, prefix):
            self.refused_by_ip += 1
            return None
        if len(bucket.entries) < self.k:
            self._add(bucket, contact, prefix, now)
            return None
        bucket.replacements.pop(contact.node_id, None)
        bucket.replacements[contact.node_id] = contact
        if len(bucket.replacements) > self.replacement_size:
            bucket.replacements.popitem(last=False)
        oldest = next(iter(bucket.entries.values()))
        # A contact heard from within `recently_seen` is known to be alive: pinging it for every
        # newcomer would only double the traffic of a busy node. The newcomer waits as a
        # replacement, ready for when a contact fails.
        if bucket.checking is None and oldest.last_seen <= now - self.recently_seen:
            bucket.checking = oldest.contact.node_id
            return oldest.contact
        return None

    def ping_answered(self, node_id: bytes, alive: bool, now: float) -> None:
        """The outcome of a ping `observe` asked for."""
        bucket = self._bucket(self.bucket_index(node_id))
        if bucket.checking == node_id:
            bucket.checking = None
        if node_id not in bucket.entries:
            return
        if alive:
            self.observe(bucket.entries[node_id].contact, now)
        else:
            self._remove(bucket, node_id)
            self._promote(bucket, now)

    def wants(self, contact: Contact, now: float) -> bool:
        """Whether `observe` would do something with this contact now: add it (its bucket has
        room), or check the bucket's oldest entry for it (silent for `recently_seen`), within
        the IP limits. Only then is it worth checking that it answers at its address."""
        if contact.node_id == self.own_id or contact.node_id in self._all:
            return False
        bucket = self._buckets.get(self.bucket_index(contact.node_id)) or _Bucket()
        if not self._ip_allows(bucket, self.trusted.capped_prefix(contact.host)):
            return False
        if len(bucket.entries) < self.k:
            return True
        oldest = next(iter(bucket.entries.values()))
        return bucket.checking is None and oldest.last_seen <= now - self.recently_seen

    def failed(self, node_id: bytes, addr: tuple[str, int], now: float) -> None:
        """An RPC to `node_id` at `addr` went unanswered: after `max_fails` in a row, or at once
        if a replacement is waiting, the contact leaves the table. Silence at another address
        than the entry's says nothing about the entry (anyone can name a key at a dead address).
        """
        bucket = self._bucket(self.bucket_index(node_id))
        entry = bucket.entries.get(node_id)
        if entry is None:
            if node_id in bucket.replacements and bucket.replacements[node_id].addr == addr:
                del bucket.replacements[node_id]
            return
        if entry.contact.addr != addr:
            return
        entry.fails += 1
        if entry.fails >= self.max_fails or bucket.replacements:
            self._remove(bucket, node_id)
            self._promote(bucket, now)

    def closest(self, target: bytes, n: int, exclude: bytes | None = None) -> list[Contact]:
        """The `n` contacts nearest `target`, nearest first.

        Only a few buckets need looking at: with i the bucket `target` falls in, contacts in
        bucket i are nearer to it than any in buckets below i, which are nearer than any in
        buckets above i, each of those nearer than the next.
        """
        t = as_int(target)
        i = (self._own ^ t).bit_length() - 1
        want = n + (exclude is not None)
        pool: list[_Entry] = []
        if i in self._buckets:
            pool += self._buckets[i].entries.values()
        if len(pool) < want:
            for j in self._occupied:  # ascending
                if j < i:
                    pool += self._buckets[j].entries.values()
            for j in self._occupied:
                if j > i:
                    if len(pool) >= want:
                        break
                    pool += self._buckets[j].entries.values()
        best = heapq.nsmallest(want, pool, key=lambda e: e.int_id ^ t)
        return [e.contact for e in best if e.contact.node_id != exclude][:n]

    def touch(self, target: bytes, now: float) -> None:
        """A lookup for `target` just completed: its bucket counts as refreshed."""
        if target != self.own_id:
            self._last_lookup[self.bucket_index(target)] = now

    def buckets_to_refresh(self, now: float, interval: float) -> list[int]:
        """Indices of buckets not looked up in `interval`, from the nearest occupied one outward
        (closer buckets are empty in any network of realistic size)."""
        if not self._occupied:
            return []
        return [
            i
            for i in range(self._occupied[0], ID_BITS)
            if self._last_lookup.get(i, self._started) <= now - interval
        ]

    def random_id_in_bucket(self, index: int, rng: random.Random) -> bytes:
        """An id whose XOR distance from ours has its highest set bit at `index`."""
        d = (1 << index) | rng.getrandbits(index) if index else 1
        return (self._own ^ d).to_bytes(ID_BITS // 8, "big")

    # -- internals -------------------------------------------------------------------------

    def _bucket(self, index: int) -> _Bucket:
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        return bucket

    def _ip_allows(self, bucket: _Bucket, prefix: str | None) -> bool:
        if prefix is None:
            return True
        if self.bucket_ip_limit is not None and bucket.prefixes[prefix] >= self.bucket_ip_limit:
            return False
        if self.table_ip_limit is not None and self._prefixes[prefix] >= self.table_ip_limit:
            return False
        return True

    def _add(self, bucket: _Bucket, contact: Contact, prefix: str | None, now: float) -> None:
        entry = _Entry(contact, as_int(contact.node_id), prefix, now)
        if not bucket.entries:
            bisect.insort(self._occupied, (entry.int_id ^ self._own).bit_length() - 1)
        bucket.entries[contact.node_id] = entry
        self._all[contact.node_id] = entry
        bucket.replacements.pop(contact.node_id, None)
        if prefix is not None:
            bucket.prefixes[prefix] += 1
            self._prefixes[prefix] += 1

    def _remove(self, bucket: _Bucket, node_id: bytes) -> None:
        entry = bucket.entries.pop(node_id)
        del self._all[node_id]
        if not bucket.entries:
            self._occupied.remove((entry.int_id ^ self._own).bit_length() - 1)
        if entry.prefix is not None:
            for counts in (bucket.prefixes, self._prefixes):
                counts[entry.prefix] -= 1
                if not counts[entry.prefix]:
                    del counts[entry.prefix]

    def _promote(self, bucket: _Bucket, now: float) -> None:
        """Fill a freed place with the most recently seen replacement that the IP limits allow."""
        while bucket.replacements and len(bucket.entries) < self.k:
            node_id, contact = bucket.replacements.popitem(last=True)
            prefix = self.trusted.capped_prefix(contact.host)
            if self._ip_allows(bucket, prefix):
                self._add(bucket, contact, prefix, now)
                return
