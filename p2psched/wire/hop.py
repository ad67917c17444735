"""What a node and a gate say to each other on the gate's relay port, and the relay address a
worker behind NAT advertises.

Every connection to a gate's relay port starts in the clear with short framed messages (a
2-byte length, then MessagePack): the gate's `hello` (a fresh nonce, and the address it sees
the caller at), then the caller's one request:
- `control`: a node's channel to the gate. The gate answers `ok` (or refuses), then both run
  the Noise handshake on it, and the secure channel carries `reserve`, `dialback` and the
  gate's `incoming` notices (schemas below).
- `connect`: a scheduler asks for a circuit to a worker that holds a reservation. It signs the
  gate's nonce, so the gate knows which peer opens circuits (limits are per peer) and a
  recorded request cannot be replayed. Once the worker's side is there, the gate answers `ok`
  and from then on forwards raw bytes both ways: the scheduler and the worker run their own
  Noise handshake through it, so the gate carries bytes it can neither read nor alter.
- `accept`: the worker's side of a circuit, naming the token an `incoming` notice gave it.
A refusal is a `refused` frame with the reason, then the gate hangs up.

Owns: the framing and the schemas of these messages, and the `connect` signature (relay
addresses are `wire.address`'s); sans-I/O (the streams are `wire.hop_stream`'s).
Promises: a malformed frame raises `HopError` naming what was wrong.
"""

from __future__ import annotations

from typing import Any

from p2psched.identity import Identity, node_id_of, verify
from p2psched.wire import schema
from p2psched.wire.codec import DecodeError, decode, encode
from p2psched.wire.noise import ChannelError
from p2psched.wire.schema import SchemaError

MAX_HOP_FRAME = 1024
# A control-channel message is a few hundred bytes at most (its largest, a reachability answer,
# holds a reason of 300 characters and an address): one far larger is an attack, not a message.
MAX_CONTROL_FRAME = 4096
NONCE_BYTES = 16
_CONNECT_DOMAIN = b"p2psched/relay-connect/v1"
_ID = schema.bin_exact(32)
_REASON = schema.text(300)
_ADDRESS = schema.text(80)


class HopError(ChannelError):
    """The other end broke the relay protocol, refused us, or went away; the text says which.
    A `ChannelError`: to the one dialing a worker, a refusing gate is a channel not opened."""


_OPENING: dict[str, schema.Check] = {
    # gate → caller, first thing on every connection
    "hello": schema.mapping(
        {"t": schema.text(8), "gate": _ID, "nonce": schema.bin_exact(NONCE_BYTES), "seen": _ADDRESS}
    ),
    # caller → gate: one of these three
    "control": schema.mapping({"t": schema.text(8)}),
    "connect": schema.mapping(
        {"t": schema.text(8), "to": _ID, "key": schema.bin_exact(32), "sig": schema.bin_exact(64)}
    ),
    "accept": schema.mapping({"t": schema.text(8), "token": schema.bin_exact(NONCE_BYTES)}),
    # gate → caller: the answer to `connect` or `accept`
    "ok": schema.mapping({"t": schema.text(8)}),
    "refused": schema.mapping({"t": schema.text(8), "reason": _REASON}),
}

CONTROL: dict[str, schema.Check] = {
    # node → gate, on the secure control channel
    "reserve": schema.mapping({"t": schema.text(16)}),
    "dialback": schema.mapping({"t": schema.text(16), "port": schema.uint(65535)}),
    # gate → node
    "reserved": schema.mapping({"t": schema.text(16), "ttl": schema.number(1.0, 1e7)}),
    "refused": schema.mapping({"t": schema.text(16), "reason": _REASON}),
    "reachability": schema.mapping(
        {"t": schema.text(16), "reachable": schema.boolean, "seen": _ADDRESS, "reason": _REASON}
    ),
    "incoming": schema.mapping(
        {"t": schema.text(16), "token": schema.bin_exact(NONCE_BYTES), "peer": _ID}
    ),
}


def _check(table: dict[str, schema.Check], message: Any, allowed: tuple[str, ...]) -> Any:
    kind = message.get("t") if type(message) is dict else None
    if kind not in allowed or type(kind) is not str:
        raise SchemaError("t", f"expected one of {', '.join(allowed)}")
    return table[kind](message, kind)


def parse_control(message: Any, *allowed: str) -> dict[str, Any]:
    """A checked control-channel message of one of the `allowed` kinds, or `SchemaError`."""
    checked: dict[str, Any] = _check(CONTROL, message, allowed or tuple(CONTROL))
    return checked


def frame(message: dict[str, Any]) -> bytes:
    """One opening message, framed: a 2-byte length, then its MessagePack."""
    body = encode(message)
    assert len(body) <= MAX_HOP_FRAME, message["t"]
    return len(body).to_bytes(2, "big") + body


def parse_opening(body: bytes, *allowed: str) -> dict[str, Any]:
    """A checked opening message (a frame's body) of one of the `allowed` kinds, or of
    `refused`, which raises `HopError` with the gate's reason unless it is allowed."""
    try:
        kinds = (*allowed, "refused")
        message: dict[str, Any] = _check(_OPENING, decode(body), kinds)
    except (DecodeError, SchemaError) as e:
        raise HopError(f"malformed relay message ({e})") from None
    if message["t"] == "refused" and "refused" not in allowed:
        raise HopError(f"the gate refused: {message['reason']}")
    return message


def connect_request(identity: Identity, hello: dict[str, Any], to: bytes) -> dict[str, Any]:
    """The `connect` frame asking the gate of `hello` for a circuit to the worker `to`."""
    sig = identity.sign(_connect_body(hello["gate"], hello["nonce"], to))
    return {"t": "connect", "to": to, "key": identity.public_key, "sig": sig}


def connect_signer(request: dict[str, Any], gate: bytes, nonce: bytes) -> bytes | None:
    """The node id that signed this `connect` for this gate and nonce; None if none did."""
    body = _connect_body(gate, nonce, request["to"])
    return node_id_of(request["key"]) if verify(request["key"], request["sig"], body) else None


def _connect_body(gate: bytes, nonce: bytes, to: bytes) -> bytes:
    return _CONNECT_DOMAIN + gate + nonce + to
