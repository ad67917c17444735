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
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from p2psched.api.bodies import (
    REFUSAL_STATUS,
    InstanceAddress,
    InstanceQueue,
    InstanceQueues,
    InstanceRef,
    InstanceRegistered,
    InstanceRemoved,
    ModelInstance,
    PredictMode,
    QueueQuery,
    QueueSubmission,
    StrategyChoice,
    Switched,
    TaskPlaced,
    TaskRef,
    TaskStatus,
    refusals,
)
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
# A Host header naming this machine's loopback, with any port: what a client on it sends.
_LOOPBACK_HOST = re.compile(r"(127\.0\.0\.1|\[::1\]|localhost)(:[0-9]{1,5})?", re.IGNORECASE)

Body = TypeVar("Body", bound=BaseModel)


def open_to_loopback(scope: MutableMapping[str, Any]) -> bool:
    """Whether a request may go without the token: one of the document's paths, from a
    loopback peer over TCP, naming loopback in its one Host header, with no Origin header."""
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
    return not any(name == b"origin" for name, _ in headers)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as `model`; `_Refused` naming the field that is wrong."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "body"
        raise _Refused(422, f"{where}: {first['msg']}") from None


async def _answer(
    extra: dict[str, Any], make: Callable[[], Awaitable[BaseModel]]
) -> BaseModel | JSONResponse:
    """What `make` answers; a refusal as the document's error, with `extra` fields beside."""
    try:
        return await make()
    except _Refused as e:
        status, message = e.status, str(e)
    except Refusal as e:
        status, message = REFUSAL_STATUS.get(type(e), 400), str(e)
    return JSONResponse({"status": "error", "message": message, **extra}, status_code=status)


def _takes(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI description of a route's JSON body (read by `_read`, not by FastAPI)."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}}
    return {"requestBody": {**schema, "required": model is not QueueQuery}}


def document_routes(facade: NodeFacade, instances: TaskInstances) -> APIRouter:
    router = APIRouter(tags=["design documents: Scheduler API"])

    @router.post(
        "/scheduler/set",
        responses=refusals(400, 422),
        openapi_extra=_takes(StrategyChoice),
        response_model=Switched,
    )
    async def set_strategy(request: Request) -> Any:
        """Switch the scheduling strategy; it applies at once to every job of this node."""

        async def make() -> Switched:
            facade.switch_strategy((await _read(request, StrategyChoice)).name)
            return Switched()

        return await _answer({}, make)

    @router.post(
        "/scheduler/predict_mode",
        responses=refusals(400, 422),
        openapi_extra=_takes(PredictMode),
        response_model=Switched,
    )
    async def set_predict_mode(request: Request) -> Any:
        """`default` learns from what this node observes; `lookup_table` answers from a table."""

        async def make() -> Switched:
            facade.switch_predictor((await _read(request, PredictMode)).mode)
            return Switched()

        return await _answer({}, make)

    @router.post(
        "/ti/register",
        responses=refusals(409, 422),
        openapi_extra=_takes(InstanceAddress),
        response_model=InstanceRegistered,
    )
    async def register(request: Request) -> Any:
        """Serve the models of the OpenAI-compatible server at host:port from this node's
        worker: checked first (`GET /v1/models`), then advertised, and kept across restarts."""

        async def make() -> InstanceRegistered:
            body = await _read(request, InstanceAddress)
            added = await instances.register(body.host, body.port)
            served = [ModelInstance(model_name=m, ti_uuid=ti) for m, ti in added]
            names = ", ".join(m for m, _ in added)
            return InstanceRegistered(
                message=f"TaskInstance registered successfully (serving {names})",
                ti_uuid=served[0].ti_uuid,
                instances=served,
            )

        return await _answer({"ti_uuid": ""}, make)

    @router.post(
        "/ti/remove",
        responses=refusals(404, 409, 422),
        openapi_extra=_takes(InstanceRef),
        response_model=InstanceRemoved,
    )
    async def remove(request: Request) -> Any:
        """Stop serving a Task Instance from this node's worker: no longer advertised, no new
        task; a task running there finishes."""
        given: dict[str, Any] = {"ti_uuid": ""}

        async def make() -> InstanceRemoved:
            body = await _read(request, InstanceRef)
            given["ti_uuid"] = body.ti_uuid
            model = await instances.remove(body.ti_uuid)
            return InstanceRemoved(
                message=f"TaskInstance removed successfully ({model})", ti_uuid=body.ti_uuid
            )

        return await _answer(given, make)

    @router.post(
        "/queue/submit",
        responses=refusals(404, 422),
        openapi_extra=_takes(QueueSubmission),
        response_model=TaskPlaced,
    )
    async def submit(request: Request) -> Any:
        """One task for a model, placed on a Task Instance that serves it (anywhere in the
        network); answered once placed, or after a few seconds (then `scheduled_ti` is empty
        and /task/query tells more)."""

        async def make() -> TaskPlaced:
            body = await _read(request, QueueSubmission)
            try:
                task = await instances.submit(body.model_name, body.task_input)
            except NotFound:
                raise NotFound(
                    f"no Task Instance serves model {body.model_name!r} (no worker's ad lists "
                    "it with the http driver; see /queue/info)"
                ) from None
            return TaskPlaced(task_id=task.task_id, scheduled_ti=task.ti_uuid)

        return await _answer({"task_id": "", "scheduled_ti": ""}, make)

    @router.post(
        "/queue/info",
        responses=refusals(422),
        openapi_extra=_takes(QueueQuery),
        response_model=InstanceQueues,
    )
    async def queue_info(request: Request) -> Any:
        """Every Task Instance the network's ads show (of `model_name`, if given), with the
        wait this node expects there, in milliseconds."""

        async def make() -> InstanceQueues:
            body = await _read(request, QueueQuery)
            waits = await instances.queues(body.model_name or None)
            return InstanceQueues(
                queues=[
                    InstanceQueue(
                        model_name=w.model,
                        ti_uuid=w.ti_uuid,
                        waiting_time_expect=w.wait_mean * 1000.0,
                        waiting_time_error=w.wait_err * 1000.0,
                    )
                    for w in waits
                ]
            )

        return await _answer({"queues": []}, make)

    @router.post(
        "/task/query",
        responses=refusals(404, 422),
        openapi_extra=_takes(TaskRef),
        response_model=TaskStatus,
    )
    async def task_query(request: Request) -> Any:
        """A task's state (queued, scheduled, completed; failed or cancelled with its error
        in `result`), Task Instance, submit time and result."""
        given: dict[str, Any] = {"task_id": ""}

        async def make() -> TaskStatus:
            body = await _read(request, TaskRef)
            given["task_id"] = body.task_id
            task = instances.task(body.task_id)
            return TaskStatus(
                task_id=task.task_id,
                task_status=task.status,
                scheduled_ti=task.ti_uuid,
                submit_time=task.submitted_at,
                result=task.result,
            )

        return await _answer(given, make)

    return router
