"""How large a DHT answer may be, and to whom: fitted to a datagram for an address that proved
itself; for one that has not, no larger than the datagram that came from there (the answer, with
a cookie if offered, else a `Retry`), so that a spoofed source gets no amplification; and the
size a first request is padded to so that its answer fits. Pure functions, sans-I/O.
"""

from __future__ import annotations

import dataclasses

from p2psched.dht import messages as m
from p2psched.wire.codec import encode
from p2psched.wire.envelope import HEADER_BYTES, MAC_BYTES

DATAGRAM_HEADER = HEADER_BYTES + MAC_BYTES  # what the envelope adds to an answer's body
# A first request (FIND_NODE, FIND_VALUE) to an address that gave us no cookie is padded to room
# for k contacts (an IPv6 one encodes to 78 bytes) and a head, so that the answer, with the cookie
# it offers, fits in what came from here: no `Retry` round trip, as QUIC pads its Initial.
_CONTACT_WIRE = 80
_FIRST_CONTACT_HEAD = 96


def fitted_body(answer: m.Response, rid: int, budget: int) -> bytes:
    """The encoded `answer`, less its last contacts or records until its datagram fits
    `budget` bytes."""
    while len(body := encode(m.to_wire(answer, rid))) + DATAGRAM_HEADER > budget:
        match answer:
            case m.Nodes(contacts) if contacts:
                answer = m.Nodes(contacts[:-1])
            case m.Values(_, _, contacts) if contacts:
                answer = dataclasses.replace(answer, contacts=contacts[:-1])
            case m.Values(records, _, _) if len(records) > 1:
                answer = m.Values(records[:-1], records[-2].publisher_id, [])
            case _:
                break  # nothing left to trim: the sizes above leave room for it
    return body


def unproven_reply(
    answer: m.Response, rid: int, cookie: bytes, size: int, *, offer_cookie: bool
) -> tuple[bytes, m.Response] | None:
    """(body, what it says) for an address that has not proven itself and sent `size` bytes:
    `answer` if its datagram fits in them (carrying `cookie` with `offer_cookie`), else a
    `Retry` with `cookie`; None if even that does not fit."""
    wire = m.to_wire(answer, rid)
    offers = (
        (m.with_cookie(wire, cookie) if offer_cookie else wire, answer),
        (m.to_wire(m.Retry(cookie), rid), m.Retry(cookie)),
    )
    for wire, reply in offers:
        body = encode(wire)
        if len(body) + DATAGRAM_HEADER <= size:
            return body, reply
    return None


def first_contact_body(k: int, max_datagram: int) -> int:
    """The body size a first request is padded to: room for an answer of `k` contacts."""
    return min(max_datagram, _FIRST_CONTACT_HEAD + k * _CONTACT_WIRE) - DATAGRAM_HEADER
