"""The MessagePack codec every peer message goes through.

Promises: `decode` never returns more than one object, never accepts input longer than its
`max_size`, never builds extension types or non-string map keys, never builds more than
`MAX_CONTAINERS` maps and lists (past a small size, or beyond a `Budget` a caller shares
among many messages) nor one of more than `MAX_ITEMS`, and signals every failure as
`DecodeError` (with a short reason) rather than whatever msgpack happened to raise.
"""

from __future__ import annotations

from typing import Any

import msgpack

# Hard ceiling for any single message; transports set tighter ones (a UDP datagram is far smaller).
MAX_MESSAGE_BYTES = 1 << 20


class DecodeError(ValueError):
    """Input that is not one well-formed, in-limits MessagePack object."""


class OverBudget(DecodeError):
    """Input that would build more than its `Budget` has left."""


def encode(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"extension type {code} is not allowed")


def decode(
    data: bytes | memoryview, max_size: int = MAX_MESSAGE_BYTES, budget: Budget | None = None
) -> Any:
    """`budget`: what the decoding may build, counted on from earlier messages (the parts of
    one whole, say); by default a message past SMALL_BYTES gets one of its own."""
    if len(data) > max_size:
        raise DecodeError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit")
    # Bounded in what it builds, not only in bytes: one byte is an empty map, which Python
    # holds in 64, so 16 MiB of them would take a gigabyte. Past SMALL_BYTES, maps and lists
    # are counted as they are built and the decoding stops past MAX_CONTAINERS of them; and
    # no container may say it holds more than MAX_ITEMS (the unpacker allocates for that).
    if budget is None and len(data) > SMALL_BYTES:
        budget = Budget()
    hook = budget.count if budget is not None else None
    items = min(len(data), MAX_ITEMS)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            object_hook=hook,
            list_hook=hook,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=items,
            max_map_len=items,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as e:  # msgpack raises a zoo of types for malformed input
        raise DecodeError(f"malformed MessagePack ({type(e).__name__})") from None


def array_items(packed: bytes | memoryview) -> tuple[int, memoryview] | None:
    """How many items a MessagePack array holds, and their bytes (each item's MessagePack,
    one after the other); None if `packed` is not an array."""
    view = memoryview(packed)
    first = view[0] if len(view) else -1
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, view[1:]
    head = {0xDC: 3, 0xDD: 5}.get(first, 0)
    if head == 0 or len(view) < head:
        return None
    return int.from_bytes(view[1:head], "big"), view[head:]


SMALL_BYTES = 64 << 10  # a message this small builds at most a few MB, whatever it holds
MAX_CONTAINERS = 1 << 18  # maps and lists in one message: ~17 MB of them at the most
MAX_ITEMS = 1 << 22  # in one map or list: 32 MB of pointers at the most


class Budget:
    """The maps and lists, and the items in them (a map's keys and values), that decodings
    may build in all; a decoding that would build more fails."""

    def __init__(self, containers: int = MAX_CONTAINERS, items: int | None = None) -> None:
        self.containers = self.containers_left = containers
        self.items = self.items_left = items

    def count(self, container: Any) -> Any:
        self.containers_left -= 1
        if self.containers_left < 0:
            raise OverBudget(f"more than {self.containers} maps and lists")
        if self.items_left is not None:
            self.items_left -= len(container) * (2 if isinstance(container, dict) else 1)
            if self.items_left < 0:
                raise OverBudget(f"more than {self.items} items in maps and lists")
        return container
