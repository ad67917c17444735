"""What crosses the network: the MessagePack codec (`codec`) and strict schemas (`schema`);
the DHT's authenticated datagrams (`envelope`); the Noise channel between nodes (`noise`, and
its trio shell `channel`); the deal between a scheduler and a worker, its signed documents
(`deal`) and its typed messages (`messages`); the relay's opening frames (`hop`, `hop_stream`);
and addresses (`address`)."""

from __future__ import annotations

from p2psched.wire.codec import DecodeError as DecodeError
from p2psched.wire.codec import decode as decode
from p2psched.wire.codec import encode as encode
from p2psched.wire.schema import SchemaError as SchemaError

__all__ = ["DecodeError", "SchemaError", "decode", "encode"]
