"""The AI Job Scheduling System's REST API (design document 003) at its own paths: tasks under
`/api/v1/tasks`, workers under `/api/v1/workers`, as JSON objects. The admin CLI
(`p2psched create-task`, `list-tasks`, ...) speaks it.

Owns: those routes and their answers. A task here is what `/queue/submit` makes (a one-task job
`task-<uuid>` for a model, run by a worker's http driver: `node.instances.TaskInstances`); a
worker is this node's worker, named by its node id (hex) or by one of its Task Instances' ids.
Promises: as every path but the design documents' Scheduler API, these need the node's token;
errors are `{"status": "error", "message": ...}`: 404 for an unknown id, 422 for a bad body or
query, 409 for what cannot be done now (cancelling a task that ended).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from p2psched.api.bodies import InstanceAddress, refusals
from p2psched.node.instances import DOCUMENT_STATUS, DocumentTask, Rejected, TaskInstances
from p2psched.node.status import Invalid, NodeFacade
from p2psched.resources.instance import instance_id
from p2psched.wire.messages import DEFAULT_PRIORITY

PAGE_MAX = 1000  # tasks in one answer, at most
TASK_STATES = sorted(set(DOCUMENT_STATUS.values()))


class TaskRequest(BaseModel):
    """A task to create: `input` goes to the model's server as the http driver sends it."""

    name: str = Field("", max_length=200, description="its job's name (empty: from the model)")
    model: str = Field(min_length=1)
    input: dict[str, Any]
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=9, description="0..9, 9 most urgent")


class RestTask(BaseModel):
    id: str = Field(description="task-<uuid>")
    name: str
    model: str
    status: str = Field(description="queued, scheduled, completed, failed or cancelled")
    priority: int
    worker: str = Field(description="the Task Instance id it was placed on (empty: none yet)")
    submitted_at: float = Field(description="Unix seconds")
    result: Any = Field(description="its output once completed, its error once failed")

    @classmethod
    def of(cls, task: DocumentTask) -> RestTask:
        return cls(
            id=task.task_id,
            name=task.name,
            model=task.model,
            status=task.status,
            priority=task.priority,
            worker=task.ti_uuid,
            submitted_at=task.submitted_at,
            result=task.result,
        )


class TaskPage(BaseModel):
    tasks: list[RestTask]
    total: int = Field(description="how many match the filters, on all pages")
    limit: int
    offset: int


class ServedInstance(BaseModel):
    id: str = Field(description="the Task Instance id")
    model: str


class WorkerRegistered(BaseModel):
    status: Literal["success"] = "success"
    instances: list[ServedInstance]


class RestWorker(BaseModel):
    id: str = Field(description="its node id, in hex")
    models: tuple[str, ...]
    drivers: tuple[str, ...]
    free_slots: int
    price: float
    addresses: tuple[str, ...]
    instances: list[ServedInstance] = Field(description="its models served by its http driver")


class WorkerList(BaseModel):
    workers: list[RestWorker]


class WorkerStatusChange(BaseModel):
    status: Literal["active", "draining"]


class WorkerHeartbeat(BaseModel):
    id: str = Field(description="as asked: the worker's node id or a Task Instance id")
    worker: str = Field(description="the worker's node id, in hex")
    status: Literal["active", "draining"]
    tasks_held: int
    free_slots: int
    instances: list[ServedInstance]
    checked: str = Field(
        "", description="for a Task Instance id: the model its health check found served"
    )


def rest_routes(facade: NodeFacade, instances: TaskInstances) -> APIRouter:
    router = APIRouter(tags=["design documents: REST API"])
    _task_routes(router, instances)
    _worker_routes(router, facade, instances)
    return router


def _task_routes(router: APIRouter, instances: TaskInstances) -> None:
    @router.post("/api/v1/tasks", status_code=201, responses=refusals(404, 422, 503))
    async def create_task(body: TaskRequest) -> RestTask:
        """Create a task for a model, run by the http driver of a worker that serves it;
        answered at once (queued), `GET /api/v1/tasks/{id}` follows it."""
        task = await instances.submit(
            body.model, body.input, wait_s=0.0, name=body.name or None, priority=body.priority
        )
        return RestTask.of(task)

    @router.get("/api/v1/tasks", responses=refusals(422))
    async def list_tasks(
        status: str = "", model: str = "", limit: int = 100, offset: int = 0
    ) -> TaskPage:
        """This node's tasks (those made here or by `/queue/submit`), newest first; only
        those in `status` or of `model`, if given."""
        if status and status not in TASK_STATES:
            raise Invalid(f"status {status!r}: choose one of {', '.join(TASK_STATES)}")
        if not 1 <= limit <= PAGE_MAX or offset < 0:
            raise Invalid(f"limit must be 1..{PAGE_MAX} and offset >= 0")
        found = [
            t
            for t in instances.tasks()
            if (not status or t.status == status) and (not model or t.model == model)
        ]
        page = [RestTask.of(t) for t in found[offset : offset + limit]]
        return TaskPage(tasks=page, total=len(found), limit=limit, offset=offset)

    @router.get("/api/v1/tasks/{task_id}", responses=refusals(404, 422))
    async def get_task(task_id: str) -> RestTask:
        return RestTask.of(instances.task(task_id))

    @router.delete("/api/v1/tasks/{task_id}", responses=refusals(404, 409, 422))
    async def cancel_task(task_id: str) -> RestTask:
        """Cancel a task that has not ended; the worker running it stops it."""
        return RestTask.of(instances.cancel(task_id))


def _worker_routes(router: APIRouter, facade: NodeFacade, instances: TaskInstances) -> None:
    @router.post("/api/v1/workers", status_code=201, responses=refusals(409, 422))
    async def register_worker(body: InstanceAddress) -> WorkerRegistered:
        """Register the OpenAI-compatible model server at host:port as Task Instances of this
        node's worker (as `/ti/register`): checked, then its models advertised."""
        added = await instances.register(body.host, body.port)
        return WorkerRegistered(instances=[ServedInstance(id=ti, model=m) for m, ti in added])

    @router.get("/api/v1/workers", responses=refusals())
    async def list_workers() -> WorkerList:
        """The live workers the network's ads show."""
        listed = []
        for ad in await facade.workers(""):
            node = bytes.fromhex(ad.node_id)
            served = ad.models if "http" in ad.drivers else ()
            listed.append(
                RestWorker(
                    id=ad.node_id,
                    models=ad.models,
                    drivers=ad.drivers,
                    free_slots=ad.free_slots,
                    price=ad.price,
                    addresses=ad.addresses,
                    instances=[ServedInstance(id=instance_id(node, m), model=m) for m in served],
                )
            )
        return WorkerList(workers=listed)

    @router.put(
        "/api/v1/workers/{worker_id}/heartbeat",
        response_model=WorkerHeartbeat,
        responses=refusals(404, 422, 503),
    )
    async def heartbeat(worker_id: str) -> Any:
        """This node's worker's state; for a Task Instance id, after its health check ran
        again (503 if it failed)."""
        checked = ""
        if worker_id != facade.info().node_id:
            try:
                checked = await instances.check(worker_id)
            except Rejected as e:
                return JSONResponse({"status": "error", "message": str(e)}, status_code=503)
        return _heartbeat(worker_id, instances, checked)

    @router.put("/api/v1/workers/{worker_id}/status", responses=refusals(404, 422))
    async def set_status(worker_id: str, body: WorkerStatusChange) -> WorkerHeartbeat:
        """`draining`: the worker finishes what it holds and takes nothing new; `active`:
        it takes tasks again. Only on the node that is that worker."""
        instances.drain(worker_id, body.status == "draining")
        return _heartbeat(worker_id, instances, "")


def _heartbeat(worker_id: str, instances: TaskInstances, checked: str) -> WorkerHeartbeat:
    state = instances.worker_state(worker_id)
    return WorkerHeartbeat(
        id=worker_id,
        worker=state.worker_id,
        status="draining" if state.draining else "active",
        tasks_held=state.tasks_held,
        free_slots=state.free_slots,
        instances=[ServedInstance(id=ti, model=m) for ti, m in state.instances.items()],
        checked=checked,
    )
