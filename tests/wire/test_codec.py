"""The MessagePack codec, with hostile input: round trips, and only `DecodeError` on what it
refuses (oversized, trailing, extension types, malformed, random bytes)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psched.wire.codec import DecodeError, decode, encode


def test_codec_round_trip() -> None:
    obj = [1, b"bytes", "text", {"k": [None, True, 2.5]}]
    assert decode(encode(obj)) == obj


def test_codec_refuses_oversized_trailing_ext_and_malformed() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        decode(encode(b"x" * 100), max_size=50)
    with pytest.raises(DecodeError):
        decode(encode(1) + encode(2))  # two objects
    with pytest.raises(DecodeError):
        decode(msgpack.packb(msgpack.ExtType(5, b"data")))
    with pytest.raises(DecodeError):
        decode(encode([1, 2, 3])[:-1])  # truncated
    with pytest.raises(DecodeError):
        decode(msgpack.packb({1: 2}))  # non-string map keys
    # A header claiming a huge array in a tiny message does not make the unpacker allocate.
    with pytest.raises(DecodeError):
        decode(b"\xdd\xff\xff\xff\xff", max_size=64)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_codec_raises_only_decode_error_on_random_bytes(data: bytes) -> None:
    try:
        decode(data, max_size=100)
    except DecodeError:
        pass
