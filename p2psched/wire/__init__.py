"""What crosses the network: the MessagePack codec, strict schemas, and authenticated datagrams."""

from __future__ import annotations

from p2psched.wire.codec import DecodeError as DecodeError
from p2psched.wire.codec import decode as decode
from p2psched.wire.codec import encode as encode
from p2psched.wire.schema import SchemaError as SchemaError

__all__ = ["DecodeError", "SchemaError", "decode", "encode"]
