"""The node as the design documents' Scheduler API sees it: Task Instances (a worker serving a
model, `resources.instance`), their queues, and tasks submitted for a model and placed on one.

Owns: registering and removing this node's worker's instances (checked, advertised, kept), every
instance the DHT knows for a model with the wait this node expects of it, and the document's
task ids (`task-<uuid>`, a one-task job of that id) and task states.
Promises: as `status.NodeFacade`: snapshots read in one go on the trio thread, and a refused
command (a `Refusal` saying why) has changed nothing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from p2psched.node.node import Node, WorkerRole
from p2psched.node.status import JOBS_MAX, Invalid, NodeFacade, NotFound, Unavailable
from p2psched.resources.instance import instance_id
from p2psched.resources.need import Clause, Need
from p2psched.scheduler.estimate import MAX_TOKENS as MAX_TOKENS  # (for the API's bodies)
from p2psched.scheduler.estimate import Tokens
from p2psched.scheduler.lifecycle import TaskState
from p2psched.wire.deal import task_id_for
from p2psched.wire.messages import DEFAULT_PRIORITY
from p2psched.worker.instances import InstanceError, Registered, probe

# The document's task states: queued until a worker committed to it, scheduled until it
# settled. It names no state for a task that ended without a result: `failed` (its error in
# `result`), and `cancelled` for one its owner cancelled.
DOCUMENT_STATUS = {
    TaskState.UNSCHEDULED: "queued",
    TaskState.QUEUED: "queued",
    TaskState.NEGOTIATING: "queued",
    TaskState.SCHEDULED: "scheduled",
    TaskState.SENT: "scheduled",
    TaskState.RUNNING: "scheduled",
    TaskState.COMPLETED: "completed",
    TaskState.FAILED: "failed",
    TaskState.TIMED_OUT: "failed",
    TaskState.ABORTED: "cancelled",
}
PLACEMENT_WAIT_S = 5.0  # a submission answers once its task is placed, or after this
_TASK_ID = re.compile(r"task-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Rejected(Invalid):
    """A Task Instance that failed its check, or one this worker cannot take."""


@dataclass(frozen=True, slots=True)
class InstanceWait:
    """What this node expects of one Task Instance: its wait and a task's run time there, in
    seconds, and what the run time rests on (the predictor's `source`)."""

    model: str
    ti_uuid: str
    wait_mean: float
    wait_err: float
    run_mean: float
    run_err: float
    source: str


@dataclass(frozen=True, slots=True)
class DocumentTask:
    task_id: str
    status: str  # one of DOCUMENT_STATUS's values
    ti_uuid: str  # empty: not placed yet
    submitted_at: float  # Unix seconds
    result: Any
    name: str = ""  # its job's
    model: str = ""
    priority: int = DEFAULT_PRIORITY


@dataclass(frozen=True, slots=True)
class WorkerState:
    """This node's worker as a heartbeat answers it."""

    worker_id: str  # its node id, in hex
    draining: bool
    tasks_held: int
    free_slots: int
    instances: dict[str, str]  # Task Instance id -> model


class TaskInstances:
    """The design documents' Scheduler API, as commands on one node."""

    def __init__(self, node: Node, facade: NodeFacade) -> None:
        self._node = node
        self._facade = facade

    # -- this worker's instances -----------------------------------------------------------------

    async def register(self, host: str, port: int) -> list[tuple[str, str]]:
        """Check the model server at host:port and serve its models from this worker: each
        model's (name, Task Instance id), once the ad that lists them is out."""
        role = self._worker()
        if "http" not in role.service.drivers:
            raise Unavailable(
                'this worker does not enable the http driver (add "http" to drivers in its '
                "config's [worker] table), through which it serves Task Instances"
            )
        try:
            models = await probe(host, port)
            added = role.instances.add(host, port, models)
        except InstanceError as e:
            raise Rejected(str(e)) from None
        try:
            await role.advertise_models()
        except ValueError as e:  # (its ad would be too large: nothing was published)
            for r in added:
                role.instances.remove(r)
            raise Rejected(str(e)) from None
        return [(r.model, role.instances.id_of(r.model)) for r in added]

    async def remove(self, ti_uuid: str) -> str:
        """Stop serving the instance's model from this worker: no longer advertised, no new
        task goes to it (a task running there finishes). Its model."""
        role = self._worker()
        try:
            wanted = str(uuid.UUID(ti_uuid))
        except ValueError:
            raise Invalid("Invalid UUID format") from None
        found: Registered | None = role.instances.find(wanted)
        if found is None:
            raise NotFound("TaskInstance not found (among those registered with this worker)")
        role.instances.remove(found)
        await role.advertise_models()
        return found.model

    def _worker(self) -> WorkerRole:
        if self._node.worker is None:
            raise Unavailable(
                "this node is not a worker: register Task Instances with a worker's node "
                "(started with `p2psched worker join`)"
            )
        return self._node.worker

    # -- the network's instances -----------------------------------------------------------------

    async def queues(
        self, model: str | None, metadata: dict[str, Any] | None = None
    ) -> list[InstanceWait]:
        """Every Task Instance the DHT knows (of `model`, if given), with the wait this node
        expects there: from what it observed, else from the worker's latest quote to it; and
        the run time there of a task of `metadata` (its tokens, if it tells both)."""
        told = metadata or {}
        tokens = (
            Tokens(told["input_tokens"], told["output_tokens"])
            if "input_tokens" in told and "output_tokens" in told
            else None
        )
        need = Need((Clause("model", "=", model),) if model else ())
        ads = await self._node.discovery.find(need, fresh=True)
        predictor = self._node.jobs.dispatcher.predictor
        waits = []
        for ad in ads:
            quote = self._latest_quote(ad.node_id)
            for served in ad.profile.installed_models:
                if model and served != model:
                    continue
                e = predictor.estimate(
                    ad.node_id,
                    served,
                    0,
                    claimed_run=quote.run_mean if quote else None,
                    claimed_wait=quote.wait_mean if quote else None,
                    claimed_wait_err=quote.wait_err if quote else None,
                    tokens=tokens,
                )
                ti = instance_id(ad.node_id, served)
                waits.append(
                    InstanceWait(
                        served, ti, e.wait_mean, e.wait_err, e.run_mean, e.run_err, e.source
                    )
                )
        return waits

    def _latest_quote(self, worker: bytes) -> Any:
        """The quote of `worker` to one of this node's running jobs that is good longest."""
        quotes = [
            w.quote
            for job in self._node.jobs.jobs.values()
            if (w := job.run.workers.get(worker)) is not None and w.quote is not None
        ]
        return max(quotes, key=lambda q: q.valid_until, default=None)

    # -- tasks ---------------------------------------------------------------------------------

    async def submit(
        self,
        model: str,
        task_input: dict[str, Any],
        *,
        wait_s: float = PLACEMENT_WAIT_S,
        name: str | None = None,
        priority: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DocumentTask:
        """One task for `model`, run by the http driver of a worker that serves it; answered
        once it is placed, or after `wait_s` (then not placed yet). `metadata`: what it tells
        the predictor (`input_tokens`, `output_tokens`)."""
        job_id = f"task-{uuid.uuid4()}"
        placed = await self._facade.submit_task(
            model,
            task_input,
            self._driver(model),
            wait_s,
            job_id=job_id,
            fresh=True,
            name=name,
            priority=priority,
            metadata=metadata,
        )
        return self.task(placed.task.rpartition("/")[0])

    def _driver(self, model: str) -> str:
        """The driver a task for `model` runs with: its [models.NAME] driver, else http."""
        wants = self._facade.model_requirements(model)
        return wants.driver if wants is not None and wants.driver else "http"

    def tasks(self) -> list[DocumentTask]:
        """Every task submitted as `task-<uuid>` this node keeps (in memory, or in its store
        from before it restarted), newest first."""
        jobs = self._facade.jobs(JOBS_MAX)
        return [self.task(j.job) for j in jobs if _TASK_ID.fullmatch(j.job)]

    def cancel(self, task_id: str) -> DocumentTask:
        """Cancel a task not yet final (the worker running it stops it); `Unavailable` if it
        already ended."""
        task = self.task(task_id)
        if task.status in ("completed", "failed", "cancelled"):
            raise Unavailable(f"task {task_id!r} already ended: {task.status}")
        self._facade.cancel(task_id)
        return self.task(task_id)

    def task(self, task_id: str) -> DocumentTask:
        """A task submitted as `task-<uuid>`, as the document shows it."""
        if not _TASK_ID.fullmatch(task_id):
            raise Invalid(f"task_id {task_id[:80]!r} is not task-<uuid>, as /queue/submit gave")
        try:
            record = self._facade.task(task_id_for(task_id, 0))
        except NotFound:
            raise NotFound(f"no task {task_id!r} on this node (see /queue/submit)") from None
        name, model, priority = self._described(task_id)
        worker = record.worker
        return DocumentTask(
            task_id=task_id,
            status=DOCUMENT_STATUS[TaskState(record.state)],
            ti_uuid=instance_id(worker, model) if worker and model else "",
            submitted_at=round(record.submitted_at, 3),
            result=record.result,
            name=name,
            model=model,
            priority=priority,
        )

    def _described(self, job_id: str) -> tuple[str, str, int]:
        """The job's name, model (empty if none) and priority."""
        job = self._node.jobs.jobs.get(job_id)
        if job is not None:
            resources = job.spec.resources
            model = resources.model if resources and resources.model else ""
            return job.spec.name, model, job.spec.priority
        spec = self._node.store.job_spec(job_id) or {}
        kept = (spec.get("resources") or {}).get("model")
        priority = spec.get("priority", DEFAULT_PRIORITY)
        return (
            str(spec.get("name", "")),
            kept if isinstance(kept, str) else "",
            priority if isinstance(priority, int) else DEFAULT_PRIORITY,
        )

    # -- this worker, as the REST API's heartbeat and status see it ------------------------------

    def worker_state(self, worker_id: str) -> WorkerState:
        """This node's worker, if `worker_id` is its node id (hex) or one of its Task
        Instances' ids."""
        role = self._own_worker(worker_id)
        manager = role.service.manager
        book = role.instances
        return WorkerState(
            worker_id=self._node.node_id.hex(),
            draining=manager.draining,
            tasks_held=manager.tasks_held,
            free_slots=manager.free_slots,
            instances={book.id_of(r.model): r.model for r in book},
        )

    async def check(self, ti_uuid: str) -> str:
        """Run a Task Instance's health check again (`GET /v1/models` of its server); its
        model, or `Rejected` saying what failed."""
        role = self._own_worker(ti_uuid)
        found = role.instances.find(ti_uuid)
        if found is None:
            raise Invalid(f"{ti_uuid!r} is this worker's node id, not a Task Instance")
        try:
            models = await probe(found.host, found.port)
        except InstanceError as e:
            raise Rejected(str(e)) from None
        if found.model not in models:
            raise Rejected(f"the server at {found.server} no longer serves {found.model!r}")
        return found.model

    def drain(self, worker_id: str, on: bool) -> WorkerState:
        """Drain this node's worker, or let it take tasks again."""
        self._own_worker(worker_id)
        self._facade.drain(on)
        return self.worker_state(worker_id)

    def _own_worker(self, worker_id: str) -> WorkerRole:
        """This node's worker, if `worker_id` names it; `NotFound` otherwise."""
        role = self._node.worker
        if role is not None:
            if worker_id == self._node.node_id.hex():
                return role
            if role.instances.find(worker_id) is not None:
                return role
        raise NotFound(
            f"no worker {worker_id!r} on this node (a worker id is a worker's node id in hex, "
            "or a Task Instance id; ask the node that is that worker)"
        )
