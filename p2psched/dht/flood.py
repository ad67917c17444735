"""What a flood of strangers may cost a DHT node: a rate per source prefix, and in total, of the
costly work a first contact asks for (an X25519 agreement or an Ed25519 check); and the cookies
an address proves itself with before it is sent more than it sent.

Owns: the token buckets, one per prefix (bounded: the least recently used goes) and one overall;
the cookies' secret key.
Promises: sans-I/O (`now` is passed in); `allow` is O(1) and never raises; a cookie keeps no
state per address, and is good for two epochs, only for the node id and address it was made for.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass

COOKIE_BYTES = 8
COOKIE_EPOCH = 60.0  # seconds a cookie stays good for (two epochs at most)


class Cookies:
    """As QUIC's Retry and DNS cookies: a keyed BLAKE2b of the node id, the address and the
    epoch, so checking one needs no state but the key."""

    def __init__(self) -> None:
        self._key = os.urandom(16)

    def make(self, node_id: bytes, addr: tuple[str, int], now: float) -> bytes:
        return self._of(node_id, addr, now // COOKIE_EPOCH)

    def check(self, cookie: bytes, node_id: bytes, addr: tuple[str, int], now: float) -> bool:
        """Whether `cookie` was made for `node_id` at `addr` in this epoch or the last."""
        epoch = now // COOKIE_EPOCH
        return any(
            hmac.compare_digest(cookie, self._of(node_id, addr, e)) for e in (epoch, epoch - 1)
        )

    def _of(self, node_id: bytes, addr: tuple[str, int], epoch: float) -> bytes:
        host, port = addr
        data = node_id + port.to_bytes(2, "big") + int(epoch).to_bytes(8, "big") + host.encode()
        return hashlib.blake2b(data, key=self._key, digest_size=COOKIE_BYTES).digest()


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float


class PrefixRate:
    """Token buckets: at most `burst` at once and `rate` a second afterwards, per prefix, and
    `total_rate` (burst `total_burst`) over all prefixes, so a flood from many prefixes still
    cannot fill the core. Each allowed call takes one token from both."""

    def __init__(
        self,
        rate: float,
        burst: float,
        total_rate: float,
        total_burst: float,
        *,
        max_prefixes: int = 4096,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.total_rate, self.total_burst = total_rate, total_burst
        self.max_prefixes = max_prefixes
        self._prefixes: OrderedDict[str, _Bucket] = OrderedDict()
        self._total: _Bucket | None = None

    def allow(self, prefix: str, now: float) -> bool:
        """Whether one more from `prefix` may be served now (and if so, it is counted)."""
        bucket = self._prefixes.get(prefix)
        if bucket is None:
            bucket = self._prefixes[prefix] = _Bucket(self.burst, now)
            if len(self._prefixes) > self.max_prefixes:
                # A forgotten prefix starts again with a full burst: a flood that rotates through
                # more prefixes than this is held by the overall bucket.
                self._prefixes.popitem(last=False)
        else:
            self._prefixes.move_to_end(prefix)
        total = self._total
        if total is None:
            total = self._total = _Bucket(self.total_burst, now)
        if not _refill(bucket, self.rate, self.burst, now):
            return False
        if not _refill(total, self.total_rate, self.total_burst, now):
            return False
        bucket.level -= 1
        total.level -= 1
        return True


def _refill(bucket: _Bucket, rate: float, burst: float, now: float) -> bool:
    """Bring `bucket` up to `now`; whether it holds a whole token."""
    bucket.level = min(burst, bucket.level + max(0.0, now - bucket.at) * rate)
    bucket.at = max(bucket.at, now)
    return bucket.level >= 1
