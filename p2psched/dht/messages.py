"""The DHT's messages, their wire form, and the strict schema each one is checked against.

Every message body is a MessagePack array `[type, request_id, *fields]`. `parse` turns a decoded
body into one of the frozen dataclasses below or raises `SchemaError` naming the field at fault.
A request may come wrapped as `[COOKIED, cookie, request]`, handing back the cookie a `Retry` or
an answer gave; an answer to an address that has not proven itself comes wrapped so, offering
one (`with_cookie`, `split_cookie`). A first request may come padded, `[PADDED, zeros, request]`,
so that its answer fits in as many bytes as it took (`padded`).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2psched.dht.flood import COOKIE_BYTES
from p2psched.dht.records import KEY_BYTES, WIRE_SCHEMA, Record
from p2psched.dht.routing import Contact
from p2psched.identity import usable_public_key
from p2psched.wire import schema
from p2psched.wire.codec import encode
from p2psched.wire.schema import SchemaError

MAX_CONTACTS = 32
MAX_RECORDS_PER_PAGE = 256
MAX_REASON = 200
COOKIED = 11  # the type of a message wrapped with a cookie
PADDED = 12  # the type of a request wrapped with padding
_PAD_WRAPPER = 6  # what `padded` adds around the request besides the zeros: array, type, bin head
# A ping is padded so that a `Pong` with a cookie (IPv6 address included) fits in its size: an
# address that has not proven itself gets no more bytes than it sent, and a ping that could not
# even be answered with a cookie would leave its sender no way to prove itself.
PING_PAD = 64


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE = 1


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE = 2
    observed: tuple[str, int]  # the address the request came from, as the answering node saw it


@dataclass(frozen=True, slots=True)
class FindNode:
    TYPE = 3
    target: bytes


@dataclass(frozen=True, slots=True)
class Nodes:
    TYPE = 4
    contacts: list[Contact]


@dataclass(frozen=True, slots=True)
class FindValue:
    TYPE = 5
    key: bytes
    cursor: bytes | None = None


@dataclass(frozen=True, slots=True)
class Values:
    TYPE = 6
    records: list[Record]
    next_cursor: bytes | None
    contacts: list[Contact]


@dataclass(frozen=True, slots=True)
class Store:
    TYPE = 7
    record: Record


@dataclass(frozen=True, slots=True)
class Stored:
    """The answer to a STORE: whether the record was kept, else why not."""

    TYPE = 8
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Retry:
    """The answer to a request from an address that has not proven it receives what is sent
    there, when the real answer would be larger than the request: send it again with `cookie`
    (as QUIC's Retry and DNS cookies do)."""

    TYPE = 10
    cookie: bytes


@dataclass(frozen=True, slots=True)
class Error:
    """The answer to a request this node could not take; `reason` says why, for the peer."""

    TYPE = 9
    reason: str


Request = Ping | FindNode | FindValue | Store
Response = Pong | Nodes | Values | Stored | Retry | Error
Message = Request | Response
REQUEST_TYPES = frozenset({Ping.TYPE, FindNode.TYPE, FindValue.TYPE, Store.TYPE})

_node_id = schema.bin_exact(KEY_BYTES)
_host = schema.text(64)
_port = schema.uint(65535)


# The same contacts come back in answer after answer: building each once (its node id is a hash)
# is worth a bounded memo. It holds only values derived from the wire, never trust.
_seen_contacts: dict[tuple[bytes, str, int], Contact] = {}
_SEEN_CONTACTS_MAX = 1 << 16


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    """Contacts carry IP literals only: a name would make the node resolve it, blocking, and
    would slip past the per-prefix limits."""
    if len(host) > 64:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _contacts(v: Any, path: str) -> list[Contact]:
    """Checks and builds contacts in one pass: every FIND_NODE answer carries up to k of them."""
    if type(v) is not list or len(v) > MAX_CONTACTS:
        raise SchemaError(path, f"expected a list of at most {MAX_CONTACTS} contacts")
    out = []
    for i, c in enumerate(v):
        if type(c) is not list or len(c) != 3:
            raise SchemaError(f"{path}[{i}]", "expected [public_key (32 bytes), host, port]")
        pub, host, port = c
        if type(pub) is not bytes or type(host) is not str or type(port) is not int:
            raise SchemaError(f"{path}[{i}]", "expected [public_key (32 bytes), host, port]")
        known = _seen_contacts.get((pub, host, port))  # a hit passed the checks below before
        if known is not None:
            out.append(known)
            continue
        if not usable_public_key(pub) or not 0 < port <= 65535 or not _is_ip(host):
            raise SchemaError(f"{path}[{i}]", "expected [public_key (32 bytes), IP address, port]")
        contact = Contact.of(pub, host, port)
        if len(_seen_contacts) >= _SEEN_CONTACTS_MAX:
            _seen_contacts.clear()
        _seen_contacts[(pub, host, port)] = contact
        out.append(contact)
    return out


_records = schema.list_of(WIRE_SCHEMA, MAX_RECORDS_PER_PAGE)
_reason = schema.text(MAX_REASON)


def contacts_to_wire(cs: list[Contact]) -> list[list[Any]]:
    return [[c.public_key, c.host, c.port] for c in cs]


def to_wire(msg: Message, rid: int) -> list[Any]:
    head: list[Any] = [msg.TYPE, rid]
    match msg:
        case Ping():
            return head + [bytes(PING_PAD)]
        case Pong(observed):
            return head + [list(observed)]
        case FindNode(target):
            return head + [target]
        case Nodes(contacts):
            return head + [contacts_to_wire(contacts)]
        case FindValue(key, cursor):
            return head + [key, cursor]
        case Values(records, next_cursor, contacts):
            return head + [[r.to_wire() for r in records], next_cursor, contacts_to_wire(contacts)]
        case Store(record):
            return head + [record.to_wire()]
        case Stored(ok, reason):
            return head + [ok, reason]
        case Retry(cookie):
            return head + [cookie]
        case Error(reason):
            return head + [reason]
    raise TypeError(f"not a DHT message: {msg!r}")


_rid = schema.uint()


_Parser = tuple[schema.Check, Callable[[list[Any]], Message]]
_PARSERS: dict[int, _Parser] = {
    Ping.TYPE: (
        schema.tuple_of(("type", "rid", "pad"), (_rid, _rid, schema.bin_exact(PING_PAD))),
        lambda v: Ping(),
    ),
    Pong.TYPE: (
        schema.tuple_of(
            ("type", "rid", "observed"),
            (_rid, _rid, schema.tuple_of(("host", "port"), (_host, _port))),
        ),
        lambda v: Pong((v[2][0], v[2][1])),
    ),
    FindNode.TYPE: (
        schema.tuple_of(("type", "rid", "target"), (_rid, _rid, _node_id)),
        lambda v: FindNode(v[2]),
    ),
    Nodes.TYPE: (
        schema.tuple_of(("type", "rid", "contacts"), (_rid, _rid, _contacts)),
        lambda v: Nodes(v[2]),
    ),
    FindValue.TYPE: (
        schema.tuple_of(
            ("type", "rid", "key", "cursor"), (_rid, _rid, _node_id, schema.optional(_node_id))
        ),
        lambda v: FindValue(v[2], v[3]),
    ),
    Values.TYPE: (
        schema.tuple_of(
            ("type", "rid", "records", "next_cursor", "contacts"),
            (_rid, _rid, _records, schema.optional(_node_id), _contacts),
        ),
        lambda v: Values([Record.from_wire(r) for r in v[2]], v[3], v[4]),
    ),
    Store.TYPE: (
        schema.tuple_of(("type", "rid", "record"), (_rid, _rid, WIRE_SCHEMA)),
        lambda v: Store(Record.from_wire(v[2])),
    ),
    Stored.TYPE: (
        schema.tuple_of(("type", "rid", "ok", "reason"), (_rid, _rid, schema.boolean, _reason)),
        lambda v: Stored(v[2], v[3]),
    ),
    Retry.TYPE: (
        schema.tuple_of(("type", "rid", "cookie"), (_rid, _rid, schema.bin_exact(COOKIE_BYTES))),
        lambda v: Retry(v[2]),
    ),
    Error.TYPE: (
        schema.tuple_of(("type", "rid", "reason"), (_rid, _rid, _reason)),
        lambda v: Error(v[2]),
    ),
}


def with_cookie(wire: list[Any], cookie: bytes) -> list[Any]:
    """A request's wire form, wrapped to hand back `cookie`."""
    return [COOKIED, cookie, wire]


def padded(wire: list[Any], size: int) -> list[Any]:
    """A request's wire form, padded with zeros to encode to `size` bytes (or to a few more
    than itself, if it is larger)."""
    return [PADDED, bytes(max(0, size - len(encode(wire)) - _PAD_WRAPPER)), wire]


def split_cookie(body: Any) -> tuple[Any, bytes | None]:
    """(the message inside, its cookie) of a wrapped body, (the request inside, None) of a
    padded one; (body, None) of any other. A wrapper whose cookie is not `COOKIE_BYTES` long, or
    whose padding is not bytes, raises SchemaError."""
    if type(body) is not list or len(body) != 3 or body[0] not in (COOKIED, PADDED):
        return body, None
    if body[0] == PADDED:
        if type(body[1]) is not bytes:
            raise SchemaError("body.padding", "expected bytes")
        return body[2], None
    cookie = schema.bin_exact(COOKIE_BYTES)(body[1], "body.cookie")
    return body[2], cookie


def peek_request_id(body: Any) -> int | None:
    """The request id of a body that at least starts like a request (to address an Error to)."""
    if type(body) is list and len(body) >= 2 and body[0] in REQUEST_TYPES:
        rid = body[1]
        if type(rid) is int and 0 <= rid < 1 << 64:
            return rid
    return None


def parse(body: Any) -> tuple[int, Message]:
    """(request id, message) from a decoded body; raises SchemaError naming what is wrong."""
    if type(body) is not list or not body or type(body[0]) is not int:
        raise SchemaError("body", "expected an array starting with a message type")
    parser = _PARSERS.get(body[0])
    if parser is None:
        raise SchemaError("body.type", f"unknown message type {body[0]}")
    check, build = parser
    v = check(body, "body")
    return v[1], build(v)
