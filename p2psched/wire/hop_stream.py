"""The relay protocol's opening frames on a trio stream (their form is `wire.hop`'s).

Promises: `read_frame` reads exactly one frame and never a byte past it (what follows is the
circuit's own stream); a broken connection or a malformed frame raises `HopError`.
"""

from __future__ import annotations

from typing import Any

import trio

from p2psched.wire.hop import MAX_HOP_FRAME, HopError, frame, parse_opening


async def write_frame(stream: trio.abc.Stream, message: dict[str, Any]) -> None:
    try:
        await stream.send_all(frame(message))
    except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
        raise HopError(f"the connection broke ({e})") from None


async def read_frame(stream: trio.abc.Stream, *allowed: str) -> dict[str, Any]:
    """The next frame, one of the `allowed` kinds. A `refused` frame, when not allowed, raises
    `HopError` with the gate's reason."""
    size = int.from_bytes(await _read_exactly(stream, 2), "big")
    if size > MAX_HOP_FRAME:
        raise HopError(f"relay frame of {size} bytes is over the {MAX_HOP_FRAME}-byte limit")
    return parse_opening(await _read_exactly(stream, size), *allowed)


async def _read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    data = b""
    try:
        while len(data) < n:
            more = await stream.receive_some(n - len(data))
            if not more:
                raise HopError("the other end closed the connection")
            data += more
    except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
        raise HopError(f"the connection broke ({e})") from None
    return data
