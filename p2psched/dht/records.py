"""Signed DHT records and the multi-value store that keeps them.

Owns: `Record` (one publisher's signed value under one key) and `RecordStore` (many per key).
Promises: the store only holds records whose signature checks against their publisher's key, that
have not expired, and that are the newest (seq, expiry) seen from their publisher for that key; an
older or equal version never replaces a newer one, not even after the newer one expired (its
version is remembered for `max_ttl`, the longest any older one could still be valid). Per-key,
per-publisher, byte and total caps bound memory; a full key or store makes room by one fair rule
(the wider network, /16 or /32, holding the most records, or bytes when bytes ran out, gives up
a record of its source network, /24 or /48, holding the most: that source's oldest; a tie goes
against the network and the source seen last), so throwaway identities from a few networks, or
from many /48s of one /32, cannot lock others out. Values the node layer knows (worker ads) pass
its injected `Validator`. Sans-I/O: every call takes `now` (seconds since the epoch).
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

from p2psched.dht.routing import is_lan
from p2psched.identity import Identity, node_id_of, verify
from p2psched.wire import schema
from p2psched.wire.address import prefix
from p2psched.wire.codec import encode

KEY_BYTES = 32
MAX_VALUE_BYTES = 4096
FIRST_PAGE = bytes(KEY_BYTES)  # a cursor before every publisher id
_RECORD_DOMAIN = b"p2psched/record/1"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    publisher: bytes  # the publisher's raw Ed25519 public key
    seq: int
    expires_ms: int  # milliseconds since the epoch
    value: bytes
    signature: bytes

    @staticmethod
    def signed_bytes(key: bytes, seq: int, expires_ms: int, value: bytes) -> bytes:
        return b"".join(
            (_RECORD_DOMAIN, key, seq.to_bytes(8, "big"), expires_ms.to_bytes(8, "big"), value)
        )

    @classmethod
    def create(
        cls, identity: Identity, key: bytes, value: bytes, *, seq: int, expires_ms: int
    ) -> Record:
        sig = identity.sign(cls.signed_bytes(key, seq, expires_ms, value))
        return cls(key, identity.public_key, seq, expires_ms, value, sig)

    @property
    def publisher_id(self) -> bytes:
        return node_id_of(self.publisher)

    @property
    def version(self) -> tuple[int, int]:
        return (self.seq, self.expires_ms)

    def expired(self, now: float) -> bool:
        return self.expires_ms <= now * 1000

    def verify(self) -> bool:
        return verify(
            self.publisher,
            self.signature,
            self.signed_bytes(self.key, self.seq, self.expires_ms, self.value),
        )

    def to_wire(self) -> list[Any]:
        return [self.key, self.publisher, self.seq, self.expires_ms, self.value, self.signature]

    @classmethod
    def from_wire(cls, v: list[Any]) -> Record:
        """`v` must already have passed `WIRE_SCHEMA`."""
        return cls(v[0], v[1], v[2], v[3], v[4], v[5])


WIRE_SCHEMA = schema.tuple_of(
    ("key", "publisher", "seq", "expires_ms", "value", "signature"),
    (
        schema.bin_exact(KEY_BYTES),
        schema.bin_exact(32),
        schema.uint(),
        schema.uint(),
        schema.bin_max(MAX_VALUE_BYTES),
        schema.bin_exact(64),
    ),
)


# Why a record is not to be held, given who sent it (their host; None for this node's own) and
# `now`; None when it may be. The node layer injects the rules for values it knows (worker ads).
Validator = Callable[[Record, str | None, float], str | None]
LOCAL = "local"  # the source prefix of this node's own records


@dataclass(frozen=True, slots=True)
class StoreLimits:
    max_per_key: int = 512
    max_per_prefix_per_key: int = 64  # records one source network (/24, /48) holds under a key
    max_per_publisher: int = 128  # a worker's ad needs a handful of keys, not a thousand
    max_records: int = 200_000
    max_bytes: int = 64 << 20  # encoded size of all records held
    max_ttl: float = 24 * 3600.0


@dataclass(slots=True)
class _Slot:
    """The records under one key, by publisher id, with publisher ids kept sorted for paging,
    and by source prefix, oldest first."""

    by_publisher: dict[bytes, tuple[Record, int, str]] = field(default_factory=dict)
    order: list[bytes] = field(default_factory=list)
    by_prefix: _Sources[bytes] = field(default_factory=lambda: _Sources[bytes]())


def source_prefix(host: str | None) -> str:
    """The network a per-source limit counts a sender by: its /24 (IPv4) or /48 (IPv6) on the
    internet; on a LAN or loopback, the host itself (a lab's machines share one private /24:
    each of them is one source, not one more entry of a single one)."""
    if host is None:
        return LOCAL
    if is_lan(host):
        return prefix(host, 32, 128) or host
    return prefix(host, 24, 48) or host


@lru_cache(maxsize=65536)
def wider_network(src: str) -> str:
    """The network a source prefix is weighed in first when room is made: its /16 (IPv4) or
    /32 (IPv6, one ISP's allocation: 65,536 /48s, which its holder gets for nothing); a LAN
    host, and this node, stay themselves."""
    try:
        net = ipaddress.ip_network(src)
    except ValueError:
        return src  # LOCAL, or a host that is no IP literal
    if net.prefixlen == net.max_prefixlen:
        return src
    return str(net.supernet(new_prefix=16 if net.version == 4 else 32))


class _Sources(Generic[_T]):
    """Items (held records) by source network, /24 or /48, oldest first, with the bytes each
    source holds, and the sources by wider network: what the fair rule weighs, kept up as items
    come and go, so that making room neither parses nor sums every source again."""

    def __init__(self) -> None:
        self.items: dict[str, OrderedDict[_T, None]] = {}  # in order of first entry
        self.bytes: Counter[str] = Counter()
        self._network: dict[str, str] = {}  # each source's wider network
        self._networks: dict[str, dict[str, None]] = {}  # their sources, in order of first entry
        self._network_items: Counter[str] = Counter()
        self._network_bytes: Counter[str] = Counter()

    def add(self, src: str, item: _T, size: int) -> None:
        group = self.items.get(src)
        if group is None:
            group = self.items[src] = OrderedDict()
            network = self._network[src] = wider_network(src)
            self._networks.setdefault(network, {})[src] = None
        group[item] = None
        network = self._network[src]
        self.bytes[src] += size
        self._network_items[network] += 1
        self._network_bytes[network] += size

    def discard(self, src: str, item: _T, size: int) -> None:
        group = self.items[src]
        del group[item]
        network = self._network[src]
        for counter, key, amount in (
            (self.bytes, src, size),
            (self._network_items, network, 1),
            (self._network_bytes, network, size),
        ):
            counter[key] -= amount
            if not counter[key]:
                del counter[key]
        if not group:
            del self.items[src], self._network[src], self._networks[network][src]
            if not self._networks[network]:
                del self._networks[network]

    def oldest_of_largest(self, by_bytes: bool = False) -> _T | None:
        """The fair rule that makes room: the wider network with the most items (`by_bytes`:
        the most bytes), then its source with the most, loses that source's oldest. Ties go
        against the one seen last, so sources that arrive in numbers cannot push out those
        that were there before them."""
        if not self.items:
            return None
        weights = self._network_bytes if by_bytes else self._network_items
        network = max(reversed(self._networks), key=weights.__getitem__)

        def weight(src: str) -> int:
            return self.bytes[src] if by_bytes else len(self.items[src])

        largest = max(reversed(self._networks[network]), key=weight)
        return next(iter(self.items[largest]))


class RecordStore:
    def __init__(
        self, limits: StoreLimits | None = None, validate: Validator | None = None
    ) -> None:
        self.limits = limits or StoreLimits()
        self.validate = validate
        self._keys: dict[bytes, _Slot] = {}
        self._per_publisher: Counter[bytes] = Counter()
        # Every record held, by source prefix, oldest first: whom a full store takes room from.
        self._by_prefix: _Sources[tuple[bytes, bytes]] = _Sources()
        self.evicted = 0
        self._count = 0
        self._bytes = 0
        # (expires_ms, key, publisher id); entries for replaced records are skipped when popped.
        self._expiry: list[tuple[int, bytes, bytes]] = []
        # (key, publisher id) -> (version of a record that expired, when to forget it), in order.
        self._tombstones: OrderedDict[tuple[bytes, bytes], tuple[tuple[int, int], float]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return self._count

    def keys(self) -> list[bytes]:
        return list(self._keys)

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def put(self, record: Record, now: float, source: str | None = None) -> str | None:
        """Store `record`, sent by host `source` (None: this node's own); None when stored (or
        already held), else the reason it was refused. A full key or store makes room by the
        fair rule (the source prefix holding the most loses its oldest), so a newcomer from
        another network is never refused for want of room."""
        if record.expired(now):
            return "expired"
        if record.expires_ms > (now + self.limits.max_ttl) * 1000:
            return f"expiry more than {self.limits.max_ttl:.0f}s ahead"
        pid = record.publisher_id
        slot = self._keys.get(record.key)
        held = slot.by_publisher.get(pid) if slot is not None else None
        if held is not None:
            if record.version < held[0].version:
                return "older than the stored version"
            if record.version == held[0].version:
                return None
        else:
            tomb = self._tombstones.get((record.key, pid))
            if tomb is not None and record.version <= tomb[0]:
                return "older than a version already seen"
            if self._per_publisher[pid] >= self.limits.max_per_publisher:
                return "publisher over its record limit"
        if not record.verify():
            return "bad signature"
        if self.validate is not None and (reason := self.validate(record, source, now)):
            return reason
        if held is not None:
            self._remove(record.key, pid, None)
        src = source_prefix(source)
        size = len(encode(record.to_wire()))
        self._make_room_in_key(record.key, src, now)
        while self._count >= self.limits.max_records or self._bytes + size > self.limits.max_bytes:
            # Full by count: the source with the most records pays; by bytes: the one holding
            # the most bytes (a few 4 KiB records must not outweigh many small honest ones).
            by_bytes = self._count < self.limits.max_records
            victim = self._by_prefix.oldest_of_largest(by_bytes)
            if victim is None:
                return "store full"
            self._remove(*victim, now)
            self.evicted += 1
        self._add(record, size, src)
        return None

    def _make_room_in_key(self, key: bytes, src: str, now: float) -> None:
        slot = self._keys.get(key)
        if slot is None:
            return
        mine = slot.by_prefix.items.get(src)
        if mine is not None and len(mine) >= self.limits.max_per_prefix_per_key:
            victim = next(iter(mine))  # a network over its share of a key displaces its own
        elif len(slot.by_publisher) >= self.limits.max_per_key:
            victim = slot.by_prefix.oldest_of_largest()  # type: ignore[assignment]
        else:
            return
        self._remove(key, victim, now)
        self.evicted += 1

    def _add(self, record: Record, size: int, src: str) -> None:
        pid = record.publisher_id
        slot = self._keys.get(record.key)
        if slot is None:
            slot = self._keys[record.key] = _Slot()
        bisect.insort(slot.order, pid)
        slot.by_publisher[pid] = (record, size, src)
        slot.by_prefix.add(src, pid, size)
        self._by_prefix.add(src, (record.key, pid), size)
        self._per_publisher[pid] += 1
        self._count += 1
        self._bytes += size
        heapq.heappush(self._expiry, (record.expires_ms, record.key, pid))
        if len(self._expiry) > 2 * self._count + 1024:
            self._compact()

    def _remove(self, key: bytes, pid: bytes, now: float | None) -> None:
        """Drop a held record; with `now` (it expired or was evicted, not replaced), remember
        its version so that no older one can take its place."""
        slot = self._keys[key]
        record, size, src = slot.by_publisher.pop(pid)
        slot.order.remove(pid)
        slot.by_prefix.discard(src, pid, size)
        self._by_prefix.discard(src, (key, pid), size)
        if not slot.by_publisher:
            del self._keys[key]
        self._per_publisher[pid] -= 1
        if not self._per_publisher[pid]:
            del self._per_publisher[pid]
        self._count -= 1
        self._bytes -= size
        if now is not None:
            self._tombstones[(key, pid)] = (record.version, now + self.limits.max_ttl)
            if len(self._tombstones) > self.limits.max_records:
                self._tombstones.popitem(last=False)

    def get(self, key: bytes, now: float) -> list[Record]:
        slot = self._keys.get(key)
        if slot is None:
            return []
        return [r for pid in slot.order if not (r := slot.by_publisher[pid][0]).expired(now)]

    def page(
        self, key: bytes, cursor: bytes | None, budget: int, now: float, *, must_fit: bool = False
    ) -> tuple[list[Record], bytes | None]:
        """Live records after publisher id `cursor` whose encoded size fits `budget` bytes, or
        the first of them alone if even that one does not fit: a page is never empty while
        records remain, so paging always ends. With `must_fit`, the budget is a hard limit:
        a first record too big for it gives an empty page and the cursor to ask again with.

        Returns them and the cursor for the next page (None when this is the last one).
        """
        slot = self._keys.get(key)
        if slot is None:
            return [], None
        start = 0 if cursor is None else bisect.bisect_right(slot.order, cursor)
        out: list[Record] = []
        used = 0
        for pid in slot.order[start:]:
            record, size, _ = slot.by_publisher[pid]
            if record.expired(now):
                continue
            if used + size > budget and out:
                return out, out[-1].publisher_id
            if used + size > budget and must_fit:
                return [], cursor if cursor is not None else FIRST_PAGE
            out.append(record)
            used += size
        return out, None

    def expire(self, now: float) -> int:
        """Drop every record that expired by `now`; returns how many."""
        removed = 0
        now_ms = now * 1000
        while self._expiry and self._expiry[0][0] <= now_ms:
            expires_ms, key, pid = heapq.heappop(self._expiry)
            slot = self._keys.get(key)
            held = slot.by_publisher.get(pid) if slot is not None else None
            if held is None or held[0].expires_ms != expires_ms:
                continue  # replaced by a newer version since, or evicted
            self._remove(key, pid, now)
            removed += 1
        while self._tombstones and next(iter(self._tombstones.values()))[1] <= now:
            self._tombstones.popitem(last=False)
        return removed

    def _compact(self) -> None:
        self._expiry = [
            (r.expires_ms, key, pid)
            for key, slot in self._keys.items()
            for pid, (r, _, _) in slot.by_publisher.items()
        ]
        heapq.heapify(self._expiry)
