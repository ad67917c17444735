"""DHT protocol cores joined by an in-memory link (`Link`), at a fixed `NOW` passed in by
hand."""

from __future__ import annotations

import os

from p2psched.dht import messages as m
from p2psched.dht.protocol import Answered, DhtConfig, DhtProtocol, Event
from p2psched.dht.records import Record
from p2psched.dht.routing import Contact
from p2psched.identity import Identity
from p2psched.wire.codec import encode
from p2psched.wire.envelope import KIND_MAC, MAC_BYTES, VERSION

NOW = 1_800_000_000.0


class Link:
    """Delivers datagrams between cores by address, in order, and collects the events."""

    def __init__(self) -> None:
        self.cores: dict[tuple[str, int], DhtProtocol] = {}
        self.events: dict[tuple[str, int], list[Event]] = {}
        self.lost: list[tuple[bytes, tuple[str, int]]] = []

    def add(
        self,
        addr: tuple[str, int],
        config: DhtConfig | None = None,
        identity: Identity | None = None,
    ) -> DhtProtocol:
        core = DhtProtocol(identity or Identity.generate(), config, now=NOW, seed=1)
        self.cores[addr] = core
        self.events[addr] = []
        return core

    def contact(self, addr: tuple[str, int]) -> Contact:
        core = self.cores[addr]
        return Contact(core.node_id, addr[0], addr[1], core.identity.public_key)

    def run(self, now: float = NOW) -> None:
        for _ in range(1000):
            moved = False
            for src, core in self.cores.items():
                for data, dst in core.take_outgoing():
                    moved = True
                    if dst in self.cores:
                        self.events[dst] += self.cores[dst].datagram_received(data, src, now)
                    else:
                        self.lost.append((data, dst))
            if not moved:
                return

    def answers(self, addr: tuple[str, int]) -> list[Answered]:
        got = [e for e in self.events[addr] if isinstance(e, Answered)]
        self.events[addr] = [e for e in self.events[addr] if not isinstance(e, Answered)]
        return got


def hold_records(
    core: DhtProtocol, key: bytes, count: int, size: int, ttl: float = 60.0
) -> list[Record]:
    """`count` records of `size`-byte values under `key`, each from its own publisher, held
    by `core` for `ttl` seconds from `NOW`."""
    expires_ms = int((NOW + ttl) * 1000)
    records = [
        Record.create(Identity.generate(), key, os.urandom(size), seq=1, expires_ms=expires_ms)
        for _ in range(count)
    ]
    for r in records:
        assert core.store.put(r, NOW) is None
    return records


def introduce(link: Link, src: tuple[str, int], dst: tuple[str, int], now: float = NOW) -> None:
    """`src` sends `dst` a request made for it (a MAC, not a first-contact signature); `src`
    announces itself, so it proves its address with the cookie `dst` gives it at once, and `dst`
    takes it into its table."""
    link.cores[src].request(link.contact(dst), m.Ping(), now, announce=True)
    link.run(now)
    link.answers(src)


def forged_first_contact(now: float) -> bytes:
    """What a flood costs the attacker least to send and a node most to open: a MAC under a
    public key never seen before (an X25519 agreement to check it), and a made-up MAC."""
    counter = int(now * 1_000_000).to_bytes(8, "big")
    head = bytes((VERSION, 0, KIND_MAC)) + os.urandom(32) + counter
    return head + os.urandom(MAC_BYTES) + encode([m.Ping.TYPE, 1, bytes(m.PING_PAD)])
