"""Which addresses have proven that they receive what is sent there, and the cookies that prove
them: the first-contact half of the DHT core's flood rules (`protocol.py` holds the rest).

Owns: the proven (node id, address) pairs, the cookies this node gives out and those it holds
from others. Promises: sans-I/O (`now` is passed in); a proof lasts `PROOF_TTL`, a cookie two
epochs, only for the node id and address it was made for; memory is bounded by `max_peers`.
"""

from __future__ import annotations

from collections import OrderedDict

from p2psched.dht.flood import Cookies
from p2psched.dht.routing import Contact

Addr = tuple[str, int]
PROOF_TTL = 600.0  # seconds a proven address stays proven without a new proof


class AddressProofs:
    """An address is proven once it answered a request of ours (only whoever receives our
    datagram knows its request id) or handed back a cookie this node gave it."""

    def __init__(self, max_peers: int) -> None:
        self.max_peers = max_peers
        self._proven: OrderedDict[tuple[bytes, Addr], float] = OrderedDict()  # -> when
        self._cookies = Cookies()
        # Cookies other nodes gave this one, handed back with every request to their address.
        self._held: OrderedDict[Addr, bytes] = OrderedDict()

    def is_proven(self, contact: Contact, now: float) -> bool:
        """Whether this (node, address) proved itself lately: a proof is good for `PROOF_TTL`
        (addresses change hands), then the next exchange proves it again."""
        proven_at = self._proven.get((contact.node_id, contact.addr))
        return proven_at is not None and proven_at > now - PROOF_TTL

    def mark_proven(self, contact: Contact, now: float) -> None:
        self._proven[(contact.node_id, contact.addr)] = now
        self._proven.move_to_end((contact.node_id, contact.addr))
        if len(self._proven) > self.max_peers:
            self._proven.popitem(last=False)

    def cookie_for(self, contact: Contact, now: float) -> bytes:
        """The cookie `contact` may hand back from its address to prove it."""
        return self._cookies.make(contact.node_id, contact.addr, now)

    def cookie_good(self, cookie: bytes, contact: Contact, now: float) -> bool:
        return self._cookies.check(cookie, contact.node_id, contact.addr, now)

    def hold(self, addr: Addr, cookie: bytes) -> None:
        """Keep the cookie the node at `addr` gave us, for our next requests there."""
        self._held[addr] = cookie
        self._held.move_to_end(addr)
        if len(self._held) > self.max_peers:
            self._held.popitem(last=False)

    def held(self, addr: Addr) -> bytes | None:
        return self._held.get(addr)
