"""How the http driver reads a model server: where a body goes on an OpenAI-compatible one,
and answers read within a byte cap, whole or as server-sent events (a streamed answer).

Promises: no more than about a cap's worth of an answer is ever held (one network read
beyond it at most); a response is ended by closing it, never left to the garbage collector;
what a server says back in a refusal is passed on without the credentials it was sent
(`redacted`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from p2psched.worker.health import Expect


def parsed(data: bytes) -> Any:
    """An answer's JSON; text that is not JSON as `{"text": ...}`."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return {"text": data.decode("utf-8", errors="replace")}


def origin(url: str) -> str:
    """The scheme, host and port of `url`: what one HTTP client serves."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


_CHAT = "/chat/completions"
_COMPLETIONS = "/completions"


def _openai_base(endpoint: str) -> str | None:
    """The path of an OpenAI-compatible server's API at `endpoint` (a base URL ending in /v1,
    or either completions URL), or None for a URL of another kind."""
    path = urlsplit(endpoint).path.rstrip("/")
    if path.endswith(_CHAT):
        return path.removesuffix(_CHAT)
    if path.endswith(_COMPLETIONS):
        return path.removesuffix(_COMPLETIONS)
    return path if path.endswith("/v1") else None


def request_url(endpoint: str, body: Any) -> str:
    """Where the http driver posts `body` for a model served at `endpoint`: on an
    OpenAI-compatible server (a base URL ending in /v1, or either completions URL), a chat
    request (one with `messages`) at chat/completions and any other at completions; any other
    URL takes every body as it is."""
    base = _openai_base(endpoint)
    if base is None:
        return endpoint
    wanted = _CHAT if isinstance(body, dict) and "messages" in body else _COMPLETIONS
    return urlunsplit(urlsplit(endpoint)._replace(path=base + wanted))


def health_url(endpoint: str, health_path: str | None) -> tuple[str, Expect]:
    """What the health check of `endpoint` asks, and what it expects back: `health_path` on
    its server, answering 2xx; else, on an OpenAI-compatible server, its list of models; else
    the endpoint itself, answering at all (it may take only POSTs)."""
    parts = urlsplit(endpoint)._replace(query="", fragment="")
    if health_path is not None:
        return urlunsplit(parts._replace(path=health_path)), "ok"
    base = _openai_base(endpoint)
    if base is None:
        return endpoint, "answer"
    return urlunsplit(parts._replace(path=base + "/models")), "models"


async def read_events(
    response: httpx.Response, cap: int, partial: Callable[[Any], None]
) -> tuple[list[Any], bool]:
    """A server-sent event stream's `data`, each `parsed` and handed to `partial` as it
    completes, until `[DONE]` or the stream's end; and whether it went over `cap` bytes (then
    it was cut there)."""
    events: list[Any] = []
    pending = bytearray()  # what came after the last complete line
    data: list[bytes] = []  # the `data` lines of the event being read
    seen = 0
    done = over = False
    try:
        async for chunk in response.aiter_bytes():
            seen += len(chunk)
            if over or done:
                continue  # (read to the end, so the connection goes back to the pool)
            if seen > cap:
                over = True  # (closed, not left by a `break`: see `read_capped`)
                await response.aclose()
                continue
            pending += chunk
            *lines, rest = pending.split(b"\n")
            pending = bytearray(rest)
            for line in (raw.rstrip(b"\r") for raw in lines):
                if line.startswith(b"data:"):
                    data.append(bytes(line[5:].removeprefix(b" ")))
                elif not line and data:  # a blank line ends an event
                    payload = b"\n".join(data)
                    data = []
                    if payload.strip() == b"[DONE]":
                        done = True
                        break
                    event = parsed(payload)
                    events.append(event)
                    partial(event)
    except (httpx.HTTPError, httpx.StreamError):
        if not over:
            raise
    return events, over


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """Up to `cap` bytes of the body, and whether there was more."""
    data = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            if len(data) > cap:
                continue
            data += chunk
            if len(data) > cap:
                # Close the connection and let the iteration fail on it rather than break out:
                # that ends each async generator in httpx's and httpcore's stack, which a
                # `break` would leave for the garbage collector (and trio's ResourceWarning).
                await response.aclose()
    except (httpx.HTTPError, httpx.StreamError):
        if len(data) <= cap:
            raise
    return bytes(data[:cap]), len(data) > cap


_REDACTED = "[credential]"
_SECRET_PART = 8  # a word of a header's value this long may be a key alone ("Bearer KEY")


def redacted(text: str, credentials: Mapping[str, str]) -> str:
    """`text` (a model server's refusal, for the scheduler, a stranger) without the
    credentials it was sent: a server may quote them ("Incorrect API key provided: ..."),
    whole, as a key alone, or cut off where the text was cut."""
    secrets = {*credentials.values()}
    secrets |= {w for v in credentials.values() for w in v.split() if len(w) >= _SECRET_PART}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
        cut = next((n for n in range(len(secret) - 1, 3, -1) if text.endswith(secret[:n])), None)
        if cut is not None:
            text = text[:-cut] + _REDACTED
    return text
