"""The health check of a model server, one for every server a worker sends tasks to: a Task
Instance being registered (`worker.instances`) and each of the http driver's endpoints when the
worker joins and until it passes (`worker.endpoint_health`).

Promises: a check is one GET, bounded in time as a whole (a server dripping its answer a byte
at a time cannot hold it) and in bytes; it fails with `Unhealthy` saying why in the design
document's words ("Connection refused", "Health check failed: ..."), and never quotes the
request's headers (they may carry credentials).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import httpx
import trio

CHECK_TIMEOUT_S = 5.0
_MODEL_LIST_BYTES = 256 << 10  # of a `GET /v1/models` answer, read at most
_MODEL_NAME = 128  # as an ad's model names may be

# What a check wants of the answer: OpenAI's list of models (its ids answered), any 2xx, or
# only an answer (any but a server's failure or a refusal of the credentials).
Expect = Literal["models", "ok", "answer"]


class Unhealthy(Exception):
    """A server that failed its health check; the message says why."""


async def check_server(
    client: httpx.AsyncClient,
    url: str,
    expect: Expect,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> tuple[str, ...]:
    """GET `url` with `headers`: the models it lists (`expect="models"`; else none), or
    `Unhealthy` saying why not."""
    with trio.move_on_after(timeout_s) as whole:
        return await _ask(client, url, expect, {**(headers or {})}, timeout_s)
    assert whole.cancelled_caught
    raise Unhealthy(f"Health check failed: no whole answer within {timeout_s:g}s")


async def _ask(
    client: httpx.AsyncClient,
    url: str,
    expect: Expect,
    headers: dict[str, str],
    timeout_s: float,
) -> tuple[str, ...]:
    path = httpx.URL(url).path
    headers["accept"] = "application/json"
    try:
        async with client.stream("GET", url, headers=headers, timeout=timeout_s) as r:
            status = r.status_code
            # (501, or a 405 below: a URL that takes only POSTs; it answered)
            refused = (status >= 500 and status != 501) or status in (401, 403)
            if (expect == "answer" and refused) or (expect != "answer" and not r.is_success):
                said = " (its credentials were refused)" if status in (401, 403) else ""
                raise Unhealthy(f"Health check failed: GET {path} answered HTTP {status}{said}")
            if expect != "models":
                return ()
            return _listed_models(await _read_capped(r, path), path)
    except httpx.ConnectError as e:
        raise Unhealthy(_why_not_connected(e)) from e
    except httpx.TimeoutException:
        raise Unhealthy(f"Health check failed: no answer within {timeout_s:g}s") from None
    except httpx.HTTPError as e:
        raise Unhealthy(f"Health check failed: {type(e).__name__}: {e}") from e


def _why_not_connected(e: BaseException) -> str:
    """The document's "Connection refused" if that is what happened (to every address the
    host has: trio tries them all and groups the errors), else what did."""
    causes: list[BaseException] = []
    seen: BaseException | None = e
    while seen is not None and len(causes) < 16:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    leaves = [
        leaf
        for cause in causes
        for leaf in (cause.exceptions if isinstance(cause, BaseExceptionGroup) else (cause,))
    ]
    if any(isinstance(leaf, ConnectionRefusedError) for leaf in leaves):
        return "Connection refused"
    return f"Cannot connect: {causes[-1]}"


async def _read_capped(response: httpx.Response, path: str) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > _MODEL_LIST_BYTES:
            raise Unhealthy(
                f"Health check failed: GET {path} answered over {_MODEL_LIST_BYTES} bytes"
            )
    return bytes(data)


def _listed_models(body: bytes, path: str) -> tuple[str, ...]:
    shape = 'OpenAI\'s list of models, {"data": [{"id": MODEL}, ...]}'
    try:
        listed = json.loads(body)["data"]
        ids = [m["id"] for m in listed]
    except (ValueError, RecursionError, KeyError, TypeError):
        raise Unhealthy(f"Health check failed: GET {path} did not answer {shape}") from None
    models = tuple(dict.fromkeys(m for m in ids if _fits_an_ad(m)))
    if not models:
        raise Unhealthy(f"Health check failed: GET {path} lists no model")
    return models


def _fits_an_ad(model: Any) -> bool:
    return (
        isinstance(model, str)
        and 0 < len(model) <= _MODEL_NAME
        and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in model)
    )
