"""The DHT's messages, their wire form, and the strict schema each one is checked against.

Every message body is a MessagePack array `[type, request_id, *fields]`. `parse` turns a decoded
body into one of the frozen dataclasses below or raises `SchemaError` naming the field at fault.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2psched.dht.records import KEY_BYTES, WIRE_SCHEMA, Record
from p2psched.dht.routing import Contact
from p2psched.identity import usable_public_key
from p2psched.wire import schema
from p2psched.wire.schema import SchemaError

MAX_CONTACTS = 32
MAX_RECORDS_PER_PAGE = 256
MAX_REASON = 200


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
class Error:
    """The answer to a request this node could not take; `reason` says why, for the peer."""

    TYPE = 9
    reason: str


Request = Ping | FindNode | FindValue | Store
Response = Pong | Nodes | Values | Stored | Error
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
            return head
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
        case Error(reason):
            return head + [reason]
    raise TypeError(f"not a DHT message: {msg!r}")


_rid = schema.uint()


def _cursor(v: Any, path: str) -> Any:
    """Where the next page starts: a publisher id, perhaps followed by an 8-byte address token
    the holder gave (see `DhtProtocol`). Opaque to the asker, who hands it back."""
    if type(v) is not bytes or len(v) not in (KEY_BYTES, KEY_BYTES + 8):
        raise SchemaError(path, f"expected {KEY_BYTES} or {KEY_BYTES + 8} bytes")
    return v


_Parser = tuple[schema.Check, Callable[[list[Any]], Message]]
_PARSERS: dict[int, _Parser] = {
    Ping.TYPE: (schema.tuple_of(("type", "rid"), (_rid, _rid)), lambda v: Ping()),
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
            ("type", "rid", "key", "cursor"), (_rid, _rid, _node_id, schema.optional(_cursor))
        ),
        lambda v: FindValue(v[2], v[3]),
    ),
    Values.TYPE: (
        schema.tuple_of(
            ("type", "rid", "records", "next_cursor", "contacts"),
            (_rid, _rid, _records, schema.optional(_cursor), _contacts),
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
    Error.TYPE: (
        schema.tuple_of(("type", "rid", "reason"), (_rid, _rid, _reason)),
        lambda v: Error(v[2]),
    ),
}


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
