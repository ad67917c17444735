"""The design documents' Scheduler API at its own paths (`/scheduler/set`, `/ti/register`,
`/queue/submit`, ...): POST with a JSON body, answered in the document's fields and units, with
`status` "success", or "error" and a `message` saying why.

Owns: those routes, and who may call them without the node's token (`open_to_loopback`): a
client written from the document sends none. Such a request is let in only from a loopback peer
over TCP, with a Host header naming loopback (so a web page that rebinds its own name to
127.0.0.1 is refused) and no Origin header (so a page in the owner's browser cannot post to
it); any other needs the token, as every other path does.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from p2psched.api.bodies import (
    REFUSAL_STATUS,
    ErrorAnswer,
    InstanceAddress,
    InstanceQueue,
    InstanceQueues,
    InstanceRef,
    InstanceRefused,
    InstanceRegistered,
    InstanceRemoved,
    ModelInstance,
    PredictMode,
    QueryRefused,
    QueueQuery,
    QueuesRefused,
    StrategyChoice,
    SubmissionRefused,
    Switched,
    TaskPlaced,
    TaskRef,
    TaskStatus,
    TaskSubmission,
    refusals,
)
from p2psched.api.local_peer import owner_of
from p2psched.api.request_body import read_body
from p2psched.node.instances import TaskInstances
from p2psched.node.status import NodeFacade, NotFound, Refusal

DOCUMENT_PATHS = frozenset(
    {
        "/scheduler/set",
        "/scheduler/predict_mode",
        "/ti/register",
        "/ti/remove",
        "/queue/submit",
        "/queue/info",
        "/task/query",
    }
)
# A request's body, read at most: a task's input is at most 10 MiB on the wire.
MAX_BODY_BYTES = 16 << 20
# A Host header naming this machine's loopback, with any port: what a client on it sends.
_LOOPBACK_HOST = re.compile(r"(127\.0\.0\.1|\[::1\]|localhost)(:[0-9]{1,5})?", re.IGNORECASE)

Body = TypeVar("Body", bound=BaseModel)


def open_to_loopback(
    scope: MutableMapping[str, Any],
    owner: Callable[[tuple[str, int], tuple[str, int]], int | None] = owner_of,
) -> bool:
    """Whether a request may go without the token: one of the document's paths, from a
    loopback peer over TCP whose socket is this node's own user's (or root's, who can read
    the token anyway), naming loopback in its one Host header, with no Origin header.

    (Loopback alone would let every other user of the host in: they are who the token and the
    data dir's Unix socket keep out; `owner` tells who a loopback peer is.)"""
    if scope["path"] not in DOCUMENT_PATHS:
        return False
    client = scope.get("client")
    try:  # (a Unix socket's peer has no IP address)
        peer = ipaddress.ip_address(client[0]) if client else None
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    if peer is None or not peer.is_loopback:
        return False
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) != 1 or not _LOOPBACK_HOST.fullmatch(hosts[0].decode("latin-1")):
        return False
    if any(name == b"origin" for name, _ in headers):
        return False
    server = scope.get("server")
    if not server or client is None:
        return False
    return owner((client[0], client[1]), (server[0], server[1])) in (os.getuid(), 0)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as `model`; `_Refused` naming the field that is wrong, or
    saying the body is over `MAX_BODY_BYTES` (read no further)."""
    raw = await read_body(request, MAX_BODY_BYTES)
    if raw is None:
        raise _Refused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "body"
        raise _Refused(422, f"{where}: {first['msg']}") from None


def _takes(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI description of a route's JSON body (read by `_read`, not by FastAPI)."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}}
    return {"requestBody": {**schema, "required": model is not QueueQuery}}


def _post(
    router: APIRouter,
    path: str,
    takes: type[Body],
    answers: type[BaseModel],
    refused: tuple[int, ...],
    error: type[ErrorAnswer] = ErrorAnswer,
    beside_error: Callable[[Body | None], dict[str, Any]] = lambda body: {},
) -> Callable[[Callable[[Body], Awaitable[BaseModel]]], None]:
    """Route POSTs of `path` to the decorated handler, which takes the body as `takes` and
    answers `answers`; a refusal is answered as the document's error, an `error`, with the
    fields `beside_error` gives (from the body, if it was read) beside `status` and `message`."""

    def route(handle: Callable[[Body], Awaitable[BaseModel]]) -> None:
        async def answer(request: Request) -> Any:
            body = None
            try:
                body = await _read(request, takes)
                return await handle(body)
            except _Refused as e:
                status, message = e.status, str(e)
            except Refusal as e:
                status, message = REFUSAL_STATUS.get(type(e), 400), str(e)
            said = error(message=message, **beside_error(body))
            return JSONResponse(said.model_dump(), status_code=status)

        router.add_api_route(
            path,
            answer,
            methods=["POST"],
            name=handle.__name__,
            description=handle.__doc__ or "",
            response_model=answers,
            responses=refusals(*refused, answer=error),
            openapi_extra=_takes(takes),
        )

    return route


def document_routes(facade: NodeFacade, instances: TaskInstances) -> APIRouter:
    router = APIRouter(tags=["design documents: Scheduler API"])
    _switch_routes(router, facade)
    _instance_routes(router, instances)
    _task_routes(router, instances)
    return router


def _switch_routes(router: APIRouter, facade: NodeFacade) -> None:
    @_post(router, "/scheduler/set", StrategyChoice, Switched, (400, 422))
    async def set_strategy(body: StrategyChoice) -> Switched:
        """Switch the scheduling strategy; it applies at once to every job of this node."""
        facade.switch_strategy(body.name)
        return Switched()

    @_post(router, "/scheduler/predict_mode", PredictMode, Switched, (400, 422))
    async def set_predict_mode(body: PredictMode) -> Switched:
        """`default` learns from what this node observes; `lookup_table` answers from a table:
        `table`, if given (a bad one is refused naming its field, and changes nothing)."""
        facade.switch_predictor(body.mode, body.table)
        return Switched()


def _instance_routes(router: APIRouter, instances: TaskInstances) -> None:
    @_post(
        router,
        "/ti/register",
        InstanceAddress,
        InstanceRegistered,
        (409, 422),
        InstanceRefused,
        lambda body: {"ti_uuid": ""},
    )
    async def register(body: InstanceAddress) -> InstanceRegistered:
        """Serve the models of the OpenAI-compatible server at host:port from this node's
        worker: checked first (`GET /v1/models`), then advertised, and kept across restarts."""
        added = await instances.register(body.host, body.port)
        served = [ModelInstance(model_name=m, ti_uuid=ti) for m, ti in added]
        return InstanceRegistered(
            message="TaskInstance registered successfully (serving "
            + ", ".join(m for m, _ in added)
            + ")",
            ti_uuid=served[0].ti_uuid,
            instances=served,
        )

    @_post(
        router,
        "/ti/remove",
        InstanceRef,
        InstanceRemoved,
        (404, 409, 422),
        InstanceRefused,
        lambda body: {"ti_uuid": body.ti_uuid if body else ""},
    )
    async def remove(body: InstanceRef) -> InstanceRemoved:
        """Stop serving a Task Instance from this node's worker: no longer advertised, no new
        task; a task running there finishes."""
        model = await instances.remove(body.ti_uuid)
        return InstanceRemoved(
            message=f"TaskInstance removed successfully ({model})", ti_uuid=body.ti_uuid
        )


def _task_routes(router: APIRouter, instances: TaskInstances) -> None:
    @_post(
        router,
        "/queue/submit",
        TaskSubmission,
        TaskPlaced,
        (404, 422),
        SubmissionRefused,
    )
    async def submit(body: TaskSubmission) -> TaskPlaced:
        """One task for a model, placed on a Task Instance that serves it (anywhere in the
        network); answered once placed, or after a few seconds (then `scheduled_ti` is empty
        and /task/query tells more)."""
        try:
            task = await instances.submit(
                body.model_name, body.task_input, metadata=body.metadata.told()
            )
        except NotFound as e:  # (naming the need: the model's, with the node's config's)
            raise NotFound(
                f"no Task Instance serves model {body.model_name!r}: {e}; see /queue/info"
            ) from None
        return TaskPlaced(task_id=task.task_id, scheduled_ti=task.ti_uuid)

    @_post(router, "/queue/info", QueueQuery, InstanceQueues, (422,), QueuesRefused)
    async def queue_info(body: QueueQuery) -> InstanceQueues:
        """Every Task Instance the network's ads show (of `model_name`, if given), with the
        wait this node expects there and the run time of a task (of `metadata`, if given:
        predicted from its tokens), in milliseconds."""
        waits = await instances.queues(body.model_name or None, body.metadata.told())
        queues = [
            InstanceQueue(
                model_name=w.model,
                ti_uuid=w.ti_uuid,
                waiting_time_expect=w.wait_mean * 1000.0,
                waiting_time_error=w.wait_err * 1000.0,
                run_time_expect=w.run_mean * 1000.0,
                run_time_error=w.run_err * 1000.0,
                predicted_from=w.source,
            )
            for w in waits
        ]
        return InstanceQueues(queues=queues)

    @_post(
        router,
        "/task/query",
        TaskRef,
        TaskStatus,
        (404, 422),
        QueryRefused,
        lambda body: {"task_id": body.task_id if body else ""},
    )
    async def task_query(body: TaskRef) -> TaskStatus:
        """A task's state (queued, scheduled, completed; failed or cancelled with its error
        in `result`), Task Instance, submit time and result."""
        task = instances.task(body.task_id)
        return TaskStatus(
            task_id=task.task_id,
            task_status=task.status,
            scheduled_ti=task.ti_uuid,
            submit_time=task.submitted_at,
            result=task.result,
        )
