"""A request's body, read within a limit: what the routes that read their own body (the
OpenAI gateway's, the design documents') share.

Owns: `read_body`. Promises: a body whose declared length is over the limit is refused before
any of it is read; one that does not say its length (chunked) is read no further than the limit;
the stream is closed either way.
"""

from __future__ import annotations

import contextlib

from starlette.requests import Request


async def read_body(request: Request, most: int) -> bytes | None:
    """The body of `request`, or None if it is over `most` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > most:
        return None
    data = bytearray()
    async with contextlib.aclosing(request.stream()) as chunks:  # (closed when refused)
        async for chunk in chunks:
            data += chunk
            if len(data) > most:
                return None
    return bytes(data)
