"""The MessagePack codec every peer message goes through.

Promises: `decode` never returns more than one object, never accepts input longer than its
`max_size`, never builds extension types or non-string map keys, and signals every failure as
`DecodeError` (with a short reason) rather than whatever msgpack happened to raise.
"""

from __future__ import annotations

from typing import Any

import msgpack

# Hard ceiling for any single message; transports set tighter ones (a UDP datagram is far smaller).
MAX_MESSAGE_BYTES = 1 << 20


class DecodeError(ValueError):
    """Input that is not one well-formed, in-limits MessagePack object."""


def encode(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"extension type {code} is not allowed")


def decode(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> Any:
    if len(data) > max_size:
        raise DecodeError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        # Every container length is bounded by the input size, so a tiny datagram cannot claim
        # a billion-element array and make the unpacker allocate for it.
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=max_size,
            max_map_len=max_size,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as e:  # msgpack raises a zoo of types for malformed input
        raise DecodeError(f"malformed MessagePack ({type(e).__name__})") from None
