"""The devnet's test model server: a small OpenAI-compatible endpoint on loopback that answers
`/v1/completions` and `/v1/chat/completions` deterministically, plain or streamed (`stream:
true`: server-sent events, a chunk a word, then `data: [DONE]`), with `n` choices and, asked
with `stream_options.include_usage`, a last chunk of usage, as OpenAI answers; and lists its
one model at `/v1/models`, so the http driver's examples and the node's OpenAI gateway run on
a devnet with no model installed.

Owns: the server (`serve`, run by `p2psched devnet serve-model` as a process of its own) and
its answers (`answer`, `chunks`). Promises: the same request gets the same answer; a stream's
chunks put together say what the plain answer says; a body over `MAX_BODY_BYTES`, not JSON,
or on another path is refused with OpenAI's error shape; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY_BYTES = 1 << 20
DRAIN_BYTES = 4 * MAX_BODY_BYTES  # a refused body read (and dropped) before answering, at most
MAX_WORDS = 16  # words of the prompt an answer repeats, at most
MODEL_NAME = "devnet-test-model"
MAX_CHOICES = 128  # `n`, at most (OpenAI's limit)


def _discard(stream: Any, length: int) -> None:
    """Read and drop a refused body of up to `DRAIN_BYTES`, so that its client, still sending,
    reads the refusal instead of a broken pipe; a larger one is not read (the connection closes)."""
    left = length if 0 < length <= DRAIN_BYTES else 0
    while left > 0:
        chunk = stream.read(min(left, 1 << 16))
        if not chunk:
            return
        left -= len(chunk)


class RequestError(ValueError):
    """A request the server refuses; the message says why."""


def _prompt(path: str, body: dict[str, Any]) -> str:
    if path == "/v1/completions":
        prompt = body.get("prompt", "")
        return " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    last = messages[-1]
    return str(last.get("content", "")) if isinstance(last, dict) else str(last)


def answer(path: str, body: Any) -> dict[str, Any]:
    """What the server answers a POST of `body` (decoded JSON) to `path`: the prompt's first
    words (at most `max_tokens` of them), in the shape OpenAI's API gives."""
    if path not in ("/v1/completions", "/v1/chat/completions"):
        raise RequestError(f"no such endpoint {path!r}: /v1/completions, /v1/chat/completions")
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    n = _choices(body)
    _include_usage(body)  # (checked here too: a plain request may not ask for it)
    limit = body.get("max_tokens", MAX_WORDS)
    limit = limit if isinstance(limit, int) and limit > 0 else MAX_WORDS
    words = _prompt(path, body).split()[: min(limit, MAX_WORDS)]
    text = "echo: " + " ".join(words)
    model = str(body.get("model", MODEL_NAME))
    digest = hashlib.sha256(json.dumps([path, body], sort_keys=True).encode()).hexdigest()[:24]
    # As OpenAI counts: the prompt once, the completion tokens of every choice.
    usage = {"prompt_tokens": len(words), "completion_tokens": (len(words) + 1) * n}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    choices: list[dict[str, Any]] = []
    for i in range(n):
        if path == "/v1/completions":
            choice: dict[str, Any] = {"index": i, "text": text, "logprobs": None}
            kind, prefix = "text_completion", "cmpl-"
        else:
            choice = {"index": i, "message": {"role": "assistant", "content": text}}
            kind, prefix = "chat.completion", "chatcmpl-"
        choices.append({**choice, "finish_reason": "stop"})
    return {
        "id": prefix + digest,
        "object": kind,
        "created": 0,
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def _choices(body: dict[str, Any]) -> int:
    """How many choices the request asks for (`n`, OpenAI's 1..128; 1 unless said)."""
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise RequestError(f"'n' must be a whole number 1..{MAX_CHOICES}, not {n!r}")
    return n


def _include_usage(body: dict[str, Any]) -> bool:
    """Whether a stream ends with a chunk of the whole request's usage (OpenAI's
    `stream_options: {include_usage: true}`, allowed only with `stream: true`)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if body.get("stream") is not True:
        raise RequestError("'stream_options' is only allowed when 'stream' is true")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError("'stream_options' must be an object like {\"include_usage\": true}")
    return bool(options.get("include_usage", False))


def chunks(path: str, body: Any) -> list[dict[str, Any]]:
    """What the server streams for `body` (with `stream: true`): each choice's text a word a
    chunk (a chat's first chunk names the role), then a chunk that says why it stopped, in
    the shapes OpenAI streams; with `stream_options.include_usage`, every chunk says
    `usage: null` and a last one, of no choices, the whole request's usage."""
    usage = _include_usage(body)
    whole = answer(path, body)
    chat = path == "/v1/chat/completions"
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": whole["id"], "object": kind, "created": 0, "model": whole["model"]}
    if usage:
        head["usage"] = None

    def chunk(i: int, delta: dict[str, Any] | str, finish: str | None) -> dict[str, Any]:
        if chat:
            said: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": finish}
        else:
            said = {"index": i, "text": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [said]}

    out = []
    for i, choice in enumerate(whole["choices"]):
        text = choice["message"]["content"] if chat else choice["text"]
        words = text.split(" ")
        pieces = [words[0], *(" " + w for w in words[1:])]
        if chat:
            out += [chunk(i, {"role": "assistant", "content": ""}, None)]
            out += [chunk(i, {"content": p}, None) for p in pieces]
            out += [chunk(i, {}, "stop")]
        else:
            out += [*(chunk(i, p, None) for p in pieces), chunk(i, "", "stop")]
    if usage:
        out.append({**head, "choices": [], "usage": whole["usage"]})
    return out


def models() -> dict[str, Any]:
    """What `GET /v1/models` answers: the one model it stands in for, as OpenAI lists models."""
    listed = {"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "p2psched"}
    return {"object": "list", "data": [listed]}


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the model servers it stands in for: a plain answer has its length, a
    # stream comes chunked. Each write goes out at once: a body held back by Nagle's algorithm
    # until the client's delayed ACK of the head would add 40 ms to every answer.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        # What a worker checks when the server is registered with it (`/ti/register`).
        if self.path == "/v1/models":
            self._send(200, models())
        elif self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, _error(f"no such endpoint {self.path!r}: /v1/models, /health"))

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        try:
            length = int(self.headers.get("content-length") or "0")
            if not 0 <= length <= MAX_BODY_BYTES:
                _discard(self.rfile, length)
                raise RequestError(f"the body must be at most {MAX_BODY_BYTES} bytes")
            try:
                body = json.loads(self.rfile.read(length))
            except (ValueError, RecursionError):
                raise RequestError("the body is not JSON") from None
            if isinstance(body, dict) and body.get("stream") is True:
                self._stream(chunks(self.path, body))
            else:
                self._send(200, answer(self.path, body))
        except RequestError as e:
            self.close_connection = True  # (its body may not have been read)
            self._send(404 if "no such endpoint" in str(e) else 400, _error(str(e)))
        except ValueError:
            self.close_connection = True
            self._send(400, _error("bad content-length"))

    def _send(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in [*(json.dumps(e) for e in events), "[DONE]"]:
            data = f"data: {event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass  # one line per request would fill the devnet's log


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


class _Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 drops the SYNs of a burst of new connections (a client 16 at
    # a time), which then wait a second for their retry: real model servers listen with ~2048.
    request_queue_size = 1024


def serve(port_file: Path, port: int = 0) -> None:
    """Listen on 127.0.0.1:`port` (0: any free one), write the port to `port_file` once
    listening (whole, by a rename), and serve until killed."""
    with _Server(("127.0.0.1", port), _Handler) as server:
        partial = port_file.with_suffix(".partial")
        partial.write_text(json.dumps({"port": server.server_address[1]}))
        os.replace(partial, port_file)
        server.serve_forever()
