"""Authenticated datagrams: every message says which node sent it, and proves it cheaply.

Owns: the per-peer MAC keys and the per-peer replay windows.
Promises: `open` returns a body only if it was sealed by the holder of the node id it names, for
this node (or, on first contact by address, for whoever answers there), within the freshness
window, and never twice; everything else raises `Rejected` with a counted reason. Memory is
bounded by `max_peers`. Sans-I/O: every call takes `now` (seconds since the epoch).

How: a node's Ed25519 identity key also gives it an X25519 key (RFC 7748's birational map, as
libsodium does), so two nodes agree one key per pair from their identity keys alone, with no
handshake: X25519, then BLAKE2b over the secret and both public keys (libsodium's crypto_kx
construction). Each datagram carries the sender's public key (its node id is the hash of it), a
counter and a keyed-BLAKE2b MAC (~1 µs; an Ed25519 check costs ~95 µs). Only a datagram to an
address whose node we do not know yet (bootstrap) is signed with Ed25519 instead.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from p2psched.identity import Identity, node_id_of, verify, x25519_public_of

# A datagram is a fixed header, the authenticator, then the MessagePack body:
#   version (1) | flags (1) | kind (1) | sender public key (32) | counter (8) | auth | body
# kind MAC: auth is a 16-byte MAC under the pair key (the recipient is named by the key);
# kind SIGNED: auth is a 64-byte Ed25519 signature, for first contact by address.
VERSION = 1
KIND_SIGNED = 0
KIND_MAC = 1
HEADER_BYTES = 3 + 32 + 8
MAC_BYTES = 16
SIG_BYTES = 64
FLAG_CLIENT = 1  # the sender is not reachable from outside: never put it in a routing table
_AUTH_DOMAIN = b"p2psched/dgram/1"
_KDF_PERSON = b"p2psched-dgram1"  # BLAKE2b personalisation: at most 16 bytes
_NO_RECIPIENT = bytes(32)
# How many recent counters per peer are remembered: datagrams may arrive this far out of order.
REPLAY_WINDOW = 64
# Replay floors kept for peers whose windows were dropped (8 bytes each).
FLOOR_SLOTS = 256


class Rejected(Exception):
    """A datagram that was dropped; `reason` is one of a small fixed set and is counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Opened:
    sender_id: bytes
    sender_public_key: bytes
    flags: int
    body: bytes
    # True for a MAC under our pair key: made for this node, so nobody can replay it elsewhere.
    # False for a signed first contact, which names no recipient: a third party may relay it to
    # another node, so it proves who wrote it but not where that node is.
    bound: bool


@dataclass(slots=True)
class _Window:
    """Counters above `floor` that were already accepted from one peer: a flat array of 64-bit
    counters (8 bytes each, not a set of int objects: there is one window per peer)."""

    last_seen: float
    recent: array[int] = field(default_factory=lambda: array("Q"))
    floor: int = 0
    highest: int = 0


def _auth_data(flags: int, recipient: bytes, counter: int, body: bytes) -> bytes:
    return b"".join((_AUTH_DOMAIN, bytes((flags,)), recipient, counter.to_bytes(8, "big"), body))


class Authenticator:
    """Seals outgoing and opens incoming datagram bodies for one node."""

    def __init__(
        self,
        identity: Identity,
        *,
        max_datagram: int,
        max_peers: int = 16384,
        freshness: float = 30.0,
        ahead: float = 5.0,
    ) -> None:
        self.identity = identity
        self.max_datagram = max_datagram
        self.max_peers = max_peers
        self.freshness = freshness
        # How far a sender's clock may run ahead of ours. Small: a window's highest counter
        # becomes a replay floor when the window is dropped, and a floor far in the future would
        # lock out whoever shares its slot until our clock caught up.
        self.ahead = ahead
        self.rejected: Counter[str] = Counter()
        self._static = X25519PrivateKey.from_private_bytes(identity.x25519_private_bytes())
        # Pair keys are a pure function of the two identities: any may be dropped and rederived.
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        self._windows: OrderedDict[bytes, _Window] = OrderedDict()
        self._floor_key = os.urandom(16)
        self._floors = array("Q", bytes(8 * FLOOR_SLOTS))
        self._counter = 0

    @property
    def peer_count(self) -> int:
        return len(self._windows)

    def pair_key(self, public_key: bytes) -> bytes:
        """The MAC key shared with the node that owns `public_key`; raises Rejected("bad_key")."""
        key = self._keys.get(public_key)
        if key is not None:
            self._keys.move_to_end(public_key)
            return key
        key = self._derive(public_key)
        self._remember(public_key, key)
        return key

    def _remember(self, public_key: bytes, key: bytes) -> None:
        self._keys[public_key] = key
        if len(self._keys) > self.max_peers:
            self._keys.popitem(last=False)

    def _derive(self, public_key: bytes) -> bytes:
        try:
            peer = X25519PublicKey.from_public_bytes(x25519_public_of(public_key))
            shared = self._static.exchange(peer)  # ValueError for a low-order point
        except ValueError:
            raise Rejected("bad_key") from None
        lo, hi = sorted((public_key, self.identity.public_key))
        return hashlib.blake2b(shared + lo + hi, digest_size=32, person=_KDF_PERSON).digest()

    def seal(self, body: bytes, recipient: bytes | None, now: float, flags: int = 0) -> bytes:
        """Wrap `body` for the node with public key `recipient`, or (None) for whoever answers
        the address it is sent to."""
        self._counter = counter = max(self._counter + 1, int(now * 1_000_000))
        if recipient is not None:
            data = _auth_data(flags, node_id_of(recipient), counter, body)
            key = self.pair_key(recipient)
            auth = hashlib.blake2b(data, key=key, digest_size=MAC_BYTES).digest()
            kind = KIND_MAC
        else:
            auth = self.identity.sign(_auth_data(flags, _NO_RECIPIENT, counter, body))
            kind = KIND_SIGNED
        header = (
            bytes((VERSION, flags, kind)) + self.identity.public_key + counter.to_bytes(8, "big")
        )
        return b"".join((header, auth, body))

    def is_stranger(self, data: bytes) -> bool:
        """Whether opening `data` would cost an X25519 agreement or an Ed25519 check: signed, or
        under a key with no pair key cached. What a flood of forged first contacts costs; a
        known peer's datagram costs a MAC."""
        return len(data) >= HEADER_BYTES and (data[2] != KIND_MAC or data[3:35] not in self._keys)

    def open(self, data: bytes, now: float) -> Opened:
        try:
            return self._open(data, now)
        except Rejected as e:
            self.rejected[e.reason] += 1
            raise

    def _open(self, data: bytes, now: float) -> Opened:
        if len(data) > self.max_datagram:
            raise Rejected("oversized")
        if len(data) < HEADER_BYTES + MAC_BYTES or data[0] != VERSION:
            raise Rejected("malformed")
        flags, kind = data[1], data[2]
        public_key = data[3:35]
        counter = int.from_bytes(data[35:43], "big")
        if kind == KIND_MAC:
            auth, body = data[43 : 43 + MAC_BYTES], data[43 + MAC_BYTES :]
        elif kind == KIND_SIGNED and len(data) >= HEADER_BYTES + SIG_BYTES:
            auth, body = data[43 : 43 + SIG_BYTES], data[43 + SIG_BYTES :]
        else:
            raise Rejected("malformed")
        if public_key == self.identity.public_key:
            raise Rejected("from_self")
        sent = counter / 1_000_000
        if sent < now - self.freshness:
            raise Rejected("stale")
        if sent > now + self.ahead:
            raise Rejected("ahead")  # the sender's clock runs fast (or ours slow): check NTP
        if kind == KIND_MAC:
            # The MAC covers our node id: a datagram meant for another node does not verify here.
            data = _auth_data(flags, self.identity.node_id, counter, body)
            key = self._keys.get(public_key)
            fresh_key = key is None
            if key is None:
                key = self._derive(public_key)
            if hashlib.blake2b(data, key=key, digest_size=MAC_BYTES).digest() != auth:
                raise Rejected("bad_mac")
            if fresh_key:  # only a genuine datagram may take a place in the key cache
                self._remember(public_key, key)
        else:
            if not verify(public_key, auth, _auth_data(flags, _NO_RECIPIENT, counter, body)):
                raise Rejected("bad_signature")
        sender = node_id_of(public_key)
        window = self._windows.get(sender)
        if window is None:
            window = self._new_window(sender, now)
        if counter <= window.floor or counter in window.recent:
            raise Rejected("replayed")
        window.recent.append(counter)
        window.highest = max(window.highest, counter)
        if len(window.recent) > REPLAY_WINDOW:
            window.floor = min(window.recent)
            window.recent.remove(window.floor)
        window.last_seen = now
        self._windows.move_to_end(sender)
        return Opened(sender, public_key, flags, body, kind == KIND_MAC)

    def _new_window(self, sender: bytes, now: float) -> _Window:
        slot = self._floor_slot(sender)
        if len(self._windows) >= self.max_peers:
            # The least recently active peer's window goes, but not what it protected: its
            # highest counter is kept as a floor in a small table (by a keyed hash of the peer,
            # so nobody can aim at another's slot), and a new window starts at its slot's floor.
            # A replay of anything it accepted is then refused as replayed, and nobody can lock
            # newcomers out by keeping the table full of fresh windows.
            oldest_id, oldest = self._windows.popitem(last=False)
            old_slot = self._floor_slot(oldest_id)
            self._floors[old_slot] = max(self._floors[old_slot], oldest.highest)
        window = self._windows[sender] = _Window(last_seen=now, floor=self._floors[slot])
        return window

    def _floor_slot(self, sender: bytes) -> int:
        digest = hashlib.blake2b(sender, key=self._floor_key, digest_size=4).digest()
        return int.from_bytes(digest, "big") % FLOOR_SLOTS
