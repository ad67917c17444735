"""This node's own records in the DHT, `Publisher`: each signed as this node's, then signed
afresh every half TTL, so the copies other nodes hold never lapse while this node still means
them. Sans-I/O: time comes in as `now`; where a record is stored is the shell's replication.

Promises: a record is published only within the limits every store enforces (value size, TTL);
a re-signed record keeps its sequence number and moves its expiry; after `unpublish` a key is
never republished.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2psched.dht.records import MAX_VALUE_BYTES, Record
from p2psched.identity import Identity


@dataclass(slots=True)
class _Published:
    value: bytes
    ttl: float
    seq: int
    republish_at: float


class Publisher:
    def __init__(self, identity: Identity, *, max_ttl: float) -> None:
        self.identity = identity
        self.max_ttl = max_ttl  # what the stores keep a record for at most
        self._published: dict[bytes, _Published] = {}

    def publish(
        self, key: bytes, value: bytes, ttl: float, now: float, seq: int | None = None
    ) -> Record:
        """Sign `value` under `key` as this node's record, and re-sign it every half `ttl` until
        `unpublish` (`due` hands it out then)."""
        if len(value) > MAX_VALUE_BYTES:
            raise ValueError(f"a record value is at most {MAX_VALUE_BYTES} bytes, not {len(value)}")
        if not 0 < ttl <= self.max_ttl:
            raise ValueError(f"ttl must be in (0, {self.max_ttl:.0f}] seconds")
        # Milliseconds since the epoch: a restarted publisher still counts upwards.
        pub = _Published(value, ttl, seq if seq is not None else int(now * 1000), 0.0)
        self._published[key] = pub
        return self._sign(key, pub, now)

    def unpublish(self, key: bytes) -> None:
        self._published.pop(key, None)

    def next_due(self) -> float:
        """When the next record is to be republished (infinity: none is published)."""
        return min((p.republish_at for p in self._published.values()), default=float("inf"))

    def due(self, now: float) -> list[Record]:
        """The records whose time to be republished has come, each signed afresh."""
        return [self._sign(k, p, now) for k, p in self._published.items() if p.republish_at <= now]

    def _sign(self, key: bytes, pub: _Published, now: float) -> Record:
        pub.republish_at = now + pub.ttl / 2
        return Record.create(
            self.identity, key, pub.value, seq=pub.seq, expires_ms=int((now + pub.ttl) * 1000)
        )
