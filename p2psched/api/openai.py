"""The node's OpenAI-compatible gateway: `GET /v1/models`, `POST /v1/chat/completions` and
`POST /v1/completions`, plain and streamed, so that any OpenAI client (base URL: the node's
API plus /v1; API key: the node's token, `<data-dir>/api.token`) sends its prompts to the
network. Each request becomes a one-task job for a worker whose http driver serves the model
(`driver=http, model=<model>`), negotiated, committed and paid for as any job's tasks are,
with the worker's signed receipt over the whole answer.

Owns: the routes, what a request must hold before it becomes a task, the answers' and errors'
shapes (OpenAI's: `{"error": {"message", "type", "param", "code"}}`), and how a task's end
maps onto a status: 401 a wrong key, 400 a bad body (or more tokens, in all its answers, than
the model's `max_output_tokens`), 404 a model no worker advertises (the ones they do named),
413 a body over the config's [server] `max_request_bytes`, 502 a worker's model server failed,
503 no worker took it (`over_price_cap`: none asks within the model's `max_price`, else
[server]'s), 504 it did not end within the model's `timeout_s`, else [server]
`request_timeout_s`.
A request without `max_tokens` gets the model's `max_output_tokens`, where the config gives one
(shared among the answers it asks for: `n`, 1..128, or /v1/completions' `best_of`, 1..20, as
OpenAI bounds them; else 400 naming the field).
Promises: a streamed answer passes on each chunk (a JSON object, not an error) as the worker's
model server produced it, as soon as it reaches this node, and ends with `data: [DONE]`, with
no error event before it only if the worker's verified result is exactly the chunks passed on
(its receipt covers what the client was shown); a stream is never retried on another worker
(its client has seen part of it), a plain answer once; a request whose client leaves, plain
or streamed, or that times out, has its task cancelled. Errors on these paths, the
framework's too (a wrong method), take OpenAI's shape. The routes are OpenAI's, not in this API's
own /openapi.json: OpenAI's API reference describes them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from p2psched.api.request_body import read_body
from p2psched.node.config import ServerTable
from p2psched.node.snapshots import TaskOutcome
from p2psched.node.status import NodeFacade, NotFound, OverPriceCap, Refusal

PATHS = ("/v1/models", "/v1/chat/completions", "/v1/completions")
# A request's output, by the names OpenAI's APIs give it (chat's newer one, and the older).
_TOKEN_LIMITS = ("max_completion_tokens", "max_tokens")
STREAM_RETRIES = 0  # a client that saw part of an answer cannot take another worker's whole
PLAIN_RETRIES = 1
MAX_CHOICES = 128  # a request's `n`, at most (OpenAI's bound)
MAX_BEST_OF = 20  # /v1/completions' `best_of`, at most (OpenAI's bound)
_SSE = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class GatewayError(Exception):
    """A request the gateway answers with an error, in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, kind: str, code: str | None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind  # OpenAI's `type`
        self.code = code
        self.param = param

    def doc(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def serves(path: str) -> bool:
    """Whether `path` is the gateway's (its errors take OpenAI's shape)."""
    return path in PATHS or path.startswith("/v1/models/")


def error(status: int, message: str, kind: str, code: str | None) -> JSONResponse:
    return JSONResponse(GatewayError(status, message, kind, code).doc(), status_code=status)


def install(app: FastAPI, facade: NodeFacade, server: ServerTable) -> None:
    """Serve the gateway's routes on `app`, for the node behind `facade`, within the bounds of
    its config's [server] table."""

    @app.exception_handler(GatewayError)
    async def refused(request: Request, e: GatewayError) -> JSONResponse:
        return JSONResponse(e.doc(), status_code=e.status)

    app.include_router(_routes(facade, server))


def _routes(facade: NodeFacade, server: ServerTable) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The models the network's workers serve through their http driver."""
        served = await facade.served_models()
        return {"object": "list", "data": [_model(m.model) for m in served]}

    @router.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        await _check_model(facade, model)
        return _model(model)

    @router.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        body = await _body(request, server.max_request_bytes)
        _check_list(body, "messages")
        return await _answer(facade, body, request, server)

    @router.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> JSONResponse | StreamingResponse:
        body = await _body(request, server.max_request_bytes)
        if not isinstance(body.get("prompt"), str | list):
            raise _bad("'prompt' must be a string or a list", "prompt")
        return await _answer(facade, body, request, server)

    return router


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "p2psched"}


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", None, param)


async def _body(request: Request, most: int) -> dict[str, Any]:
    """The request's JSON object, read up to `most` bytes."""
    data = await read_body(request, most)
    if data is None:
        raise GatewayError(
            413,
            f"the request body is over {most} bytes",
            "invalid_request_error",
            "request_too_large",
        )
    try:
        body = json.loads(data)
    except ValueError:
        raise _bad("the request body is not JSON") from None
    except RecursionError:
        raise _bad("the request body is JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must name a model (GET /v1/models lists them)", "model")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("'stream' must be true or false", "stream")
    return body


def _check_list(body: dict[str, Any], field: str) -> None:
    value = body.get(field)
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise _bad(f"'{field}' must be a non-empty list of objects", field)


async def _check_model(facade: NodeFacade, model: str) -> None:
    served = [m.model for m in await facade.served_models()]
    if model not in served:
        known = ", ".join(served) or "none (no worker with the http driver was found)"
        raise GatewayError(
            404,
            f"The model '{model[:128]}' does not exist here: no worker serves it. Models: {known}",
            "invalid_request_error",
            "model_not_found",
            "model",
        )


def _whole(body: dict[str, Any], name: str, most: int) -> int | None:
    """The request's `name`, a whole number 1..`most`, or None when it says none (or null)."""
    asked = body.get(name)
    if asked is not None and (
        isinstance(asked, bool) or not isinstance(asked, int) or not 0 < asked <= most
    ):
        raise _bad(f"'{name}' must be a whole number, 1..{most}, not {asked!r}", name)
    return asked


def _choices(body: dict[str, Any], completions: bool) -> tuple[int, str]:
    """How many answers the request makes its worker write, and the field that says so:
    `n`, or /v1/completions' `best_of` (it writes that many and returns the best `n`)."""
    n = _whole(body, "n", MAX_CHOICES) or 1
    best_of = _whole(body, "best_of", MAX_BEST_OF) if completions else None
    if best_of is None:
        return n, "n"
    if best_of < n:
        raise _bad(f"'best_of' must be at least 'n' ({n}), not {best_of}", "best_of")
    return best_of, "best_of"


def _model_limits(
    facade: NodeFacade, body: dict[str, Any], server: ServerTable, completions: bool
) -> float:
    """The request's time limit, its model's or the server's; its output, in all the answers
    it makes its worker write, bounded by the model's `max_output_tokens`, where the config
    gives one (what each may write filled in when it says none)."""
    copies, field = _choices(body, completions)
    wants = facade.model_requirements(body["model"])
    most = wants.max_output_tokens if wants is not None else None
    if most is not None:
        if copies > most:
            said = f"{copies} answers of a token at least are more than this model's"
            raise _bad(f"'{field}': {said} max_output_tokens, {most}", field)
        each = most // copies  # (each answer's share of the model's bound)
        for name in _TOKEN_LIMITS:
            asked = body.get(name)  # (null: not said, as OpenAI takes it)
            whole = isinstance(asked, int) and not isinstance(asked, bool)
            if asked is not None and (not whole or not 0 < asked <= each):
                said = f"'{name}' must be a whole number, 1..{each} for this model"
                per = f", with {field} = {copies}" if copies > 1 else ""
                raise _bad(f"{said} (its max_output_tokens, {most}{per}), not {asked!r}", name)
        if all(body.get(name) is None for name in _TOKEN_LIMITS):
            body["max_tokens"] = each
    if wants is not None and wants.timeout_s is not None:
        return wants.timeout_s
    return server.request_timeout_s


async def _answer(
    facade: NodeFacade, body: dict[str, Any], request: Request, server: ServerTable
) -> JSONResponse | StreamingResponse:
    await _check_model(facade, body["model"])
    completions = request.url.path == "/v1/completions"
    timeout_s = _model_limits(facade, body, server, completions)
    if body.get("stream") is True:
        events = _stream(facade, body, timeout_s)
        return StreamingResponse(events, media_type="text/event-stream", headers=_SSE)
    ended: TaskOutcome | None = None
    refused: Refusal | None = None
    gone: list[bool] = []
    # (Nothing raised inside the nursery: trio would wrap it in an exception group.)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hang_up, request, nursery.cancel_scope, gone)
        with trio.move_on_after(timeout_s):
            try:
                async with facade.model_task(
                    body["model"], body, timeout_s=timeout_s, retries=PLAIN_RETRIES
                ) as (parts, outcome):
                    async for _ in parts:
                        pass  # (a plain request asks for no parts: its answer is the whole)
                    ended = outcome()
            except Refusal as e:
                refused = e
        nursery.cancel_scope.cancel()
    if refused is not None:
        raise _refusal(refused)
    if gone:  # (its task was cancelled on leaving `model_task`; nobody reads this)
        raise GatewayError(499, "the client hung up", "invalid_request_error", "client_gone")
    if ended is None:
        raise _timed_out(timeout_s)
    if not ended.final:  # (an honest worker streams no parts for it: see `_stream`)
        raise _worker_failed(f"it streamed parts the request did not ask for ({ended.error})")
    if ended.state == "completed":
        return JSONResponse(ended.output)
    raise _failed(ended, timeout_s)


async def _hang_up(request: Request, waiting: trio.CancelScope, gone: list[bool]) -> None:
    """Cancel `waiting` once the client hangs up (its request's body is read already: what
    comes next is that). Starlette and Hypercorn do not cancel a handler whose client left."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    gone.append(True)
    waiting.cancel()


async def _stream(
    facade: NodeFacade, body: dict[str, Any], timeout_s: float
) -> AsyncIterator[bytes]:
    """The task's parts as server-sent events as they come, then `[DONE]`; an error (the
    status is sent already) as an event of OpenAI's error shape, which its clients raise, and
    which comes before `[DONE]` unless the answer streamed is the one the worker's receipt
    covers. (No cancel scope spans a `yield`: the server may leave this generator suspended
    there.)"""
    deadline = trio.current_time() + timeout_s
    problem: GatewayError | None = _timed_out(timeout_s)
    passed = 0
    try:
        async with facade.model_task(
            body["model"], body, timeout_s=timeout_s, retries=STREAM_RETRIES
        ) as (parts, outcome):
            while True:
                with trio.move_on_at(deadline) as waited:
                    try:
                        part = await parts.receive()
                    except trio.EndOfChannel:
                        problem = _unconfirmed(outcome(), passed, timeout_s)
                        break
                if waited.cancelled_caught:
                    break
                event, problem = _chunk(part)
                if problem is not None:
                    break  # (its task is cancelled on leaving `model_task`)
                passed += 1
                yield event
    except Refusal as e:
        problem = _refusal(e)
    if problem is not None:
        yield _event(problem.doc())
    yield b"data: [DONE]\n\n"


def _chunk(part: Any) -> tuple[bytes, GatewayError | None]:
    """A worker's part as an event, or why it cannot be one: a chunk is a JSON object, and
    not an error (an event of the node's own shape, which a worker must not make up)."""
    if not isinstance(part, dict) or "error" in part:
        what = "an error" if isinstance(part, dict) else type(part).__name__
        return b"", _worker_failed(f"it streamed a part that is not an answer's chunk ({what})")
    try:
        return _event(part), None
    except (TypeError, ValueError, RecursionError) as e:
        return b"", _worker_failed(f"it streamed a part JSON cannot hold ({type(e).__name__})")


def _unconfirmed(ended: TaskOutcome, passed: int, timeout_s: float) -> GatewayError | None:
    """Why a stream of `passed` parts is not the answer its task's receipt covers, or None."""
    if not ended.final:
        return GatewayError(
            503, f"the stream was ended: {ended.error}", "server_error", "client_too_slow"
        )
    if ended.state != "completed":
        return _failed(ended, timeout_s)
    if not isinstance(ended.output, list) or len(ended.output) != passed:
        return _worker_failed("its answer is not the parts it streamed")
    return None


def _event(doc: Any) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":"), allow_nan=False).encode() + b"\n\n"


def _failed(outcome: TaskOutcome, timeout_s: float) -> GatewayError:
    if outcome.state == "timed_out":
        return _timed_out(timeout_s, outcome.error)
    if outcome.tries == 0:
        return GatewayError(
            503, f"no worker took the request: {outcome.error}", "server_error", "no_worker"
        )
    return _worker_failed(f"{outcome.error}")


def _refusal(e: Refusal) -> GatewayError:
    """The node's refusal of a request's task: 404 when no worker has what the model needs,
    503 when those that have it all ask more than its price cap."""
    if isinstance(e, NotFound):
        return GatewayError(404, str(e), "invalid_request_error", "model_not_found", "model")
    if isinstance(e, OverPriceCap):
        return GatewayError(503, str(e), "server_error", "over_price_cap")
    return _bad(str(e))


def _worker_failed(why: str) -> GatewayError:
    return GatewayError(
        502, f"the worker's model server failed: {why}", "server_error", "worker_failed"
    )


def _timed_out(timeout_s: float, why: str | None = None) -> GatewayError:
    said = f"the request did not end within {timeout_s:g} s" + (f": {why}" if why else "")
    return GatewayError(504, said, "server_error", "timeout")
