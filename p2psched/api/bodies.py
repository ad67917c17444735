"""The control API's own bodies: the requests it takes, the error it answers with, and the answers
in the design documents' shapes (`ti_uuid`, `scheduled_ti`, milliseconds), made here, at the
API's edge, from the node's snapshots (which say `worker` and seconds).

Promises: every answer the API gives is one of these or a `node.snapshots` model, so
`/openapi.json` describes it; an answer is always an object, a list inside it under its name
(`{"jobs": [...]}`), never a bare list; `refusals` documents the errors a route can answer with.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from p2psched.node.instances import MAX_TOKENS
from p2psched.node.snapshots import (
    Failure,
    JobStatus,
    Peer,
    TaskRecord,
    TaskView,
    WorkerAdView,
    WorkerRecord,
    WorkerWait,
)
from p2psched.node.status import (
    PREDICT_MODES,
    STRATEGIES,
    Invalid,
    NotFound,
    OverPriceCap,
    Refusal,
    Unavailable,
    UnknownChoice,
)

# -- requests ------------------------------------------------------------------------------


class JobSubmission(BaseModel):
    spec: dict[str, Any] = Field(description="the job spec, as job.yaml holds it")
    source: str = Field("<api>", description="where the spec came from, for error messages")


class CancelRequest(BaseModel):
    tasks: list[str] | None = Field(None, description="task ids; none or null: the whole job")


class ChallengeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(
        None, description="the matrices' size, n x n (16..4096; none: sized from its ad)"
    )
    rows: int = Field(8, description="rows of the product to open and check (1..64)")


class StrategyChoice(BaseModel):
    name: str = Field(description=f"one of: {', '.join(STRATEGIES)}", max_length=64)


class PredictMode(BaseModel):
    mode: str = Field(description=f"one of: {', '.join(PREDICT_MODES)}", max_length=64)
    table: dict[str, Any] | None = Field(
        None,
        description="(an addition to the document) with mode lookup_table: the table to load "
        "and answer from ({version, default, sizes, models, workers}, as a table file holds "
        "it); none: the one loaded before, or the learned estimates frozen",
    )


class TaskMetadata(BaseModel):
    """The design documents' `metadata` of a task, for the predictor: with both token counts,
    its run time is predicted from them. Other fields are taken and not used."""

    model_config = ConfigDict(extra="allow", strict=True)

    input_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS, description="the prompt's")
    output_tokens: int | None = Field(
        default=None, ge=0, le=MAX_TOKENS, description="those asked for (say, max_tokens)"
    )
    hardware: str | None = Field(
        default=None, max_length=64, description="taken, not used: the worker chosen has its own"
    )

    def told(self) -> dict[str, Any]:
        """The fields the predictor reads, as a job's task's `metadata`."""
        return self.model_dump(include={"input_tokens", "output_tokens"}, exclude_none=True)


class TaskSubmission(BaseModel):
    """The design documents' task submission (`/queue/submit`): one task for a model, placed
    by the node on a worker whose http driver serves it."""

    model_name: str = Field(
        min_length=1, max_length=128, description="a model some worker serves (its ad lists it)"
    )
    task_input: dict[str, Any] = Field(
        default_factory=dict, description="what the worker's driver is given"
    )
    metadata: TaskMetadata = Field(
        default_factory=lambda: TaskMetadata(),
        description="about the task, for the predictor: input_tokens and output_tokens (both) "
        "predict its run time; without them it predicts from the model and the input's size",
    )


class QueueSubmission(TaskSubmission):
    """`/v1/queue/submit`'s: the design documents' task submission, for any driver."""

    driver: str = Field("http", max_length=32, description="the driver that runs it: http, echo…")
    wait_s: float = Field(
        5.0, ge=0.0, le=60.0, description="how long to wait for the task to be placed"
    )


# -- answers -------------------------------------------------------------------------------


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorAnswer(Answer):
    status: Literal["error"] = "error"
    message: str = Field(description="what was wrong, and what to do")


class Switched(Answer):
    """The design documents' answer to a switch of strategy or predictor mode."""

    status: Literal["success"] = "success"
    message: Literal["OK"] = "OK"


class Cancelled(Answer):
    cancelled: list[str] = Field(description="the tasks aborted (those not final yet)")


class QueueEntry(Answer):
    """A worker's expected wait and run time for a model, as the design documents give them."""

    model_name: str | None
    ti_uuid: str = Field(description="the worker's node id")
    waiting_time_expect: float = Field(description="milliseconds")
    waiting_time_error: float = Field(description="milliseconds")
    run_time_expect: float = Field(description="milliseconds")
    source: str = Field(description="what the prediction rests on: observed, claimed, ...")
    view: WorkerRecord | None = Field(description="this node's record of the worker, if any")

    @classmethod
    def of(cls, wait: WorkerWait) -> QueueEntry:
        return cls(
            model_name=wait.model,
            ti_uuid=wait.worker.hex(),
            waiting_time_expect=wait.wait_mean * 1000.0,
            waiting_time_error=wait.wait_err * 1000.0,
            run_time_expect=wait.run_mean * 1000.0,
            source=wait.source,
            view=wait.record,
        )


class QueueInfo(Answer):
    status: Literal["success"] = "success"
    queues: list[QueueEntry]


class QueuePlacement(Answer):
    status: Literal["success"] = "success"
    task_id: str
    scheduled_ti: str = Field(description="the chosen worker's node id; empty: none yet")
    task_status: str

    @classmethod
    def of(cls, task: TaskRecord) -> QueuePlacement:
        return cls(task_id=task.task, scheduled_ti=_hex(task.worker), task_status=task.state)


class TaskQuery(Answer):
    status: Literal["success"] = "success"
    task_id: str
    task_status: str
    scheduled_ti: str = Field(description="its worker's node id; empty: none yet")
    submit_time: float
    result: Any = Field(description="the output once completed, the error once failed")

    @classmethod
    def of(cls, task: TaskRecord) -> TaskQuery:
        return cls(
            task_id=task.task,
            task_status=task.state,
            scheduled_ti=_hex(task.worker),
            submit_time=task.submitted_at,
            result=task.result,
        )


class Listing(Answer):
    """A list answered: inside an object, under the name of what it lists."""

    status: Literal["success"] = "success"


class JobList(Listing):
    jobs: list[JobStatus]


class TaskList(Listing):
    tasks: list[TaskView]


class WorkerList(Listing):
    workers: list[WorkerAdView]


class FailureList(Listing):
    failures: list[Failure]


class PeerList(Listing):
    peers: list[Peer]


# -- the design documents' Scheduler API, at its own paths -------------------------------------


class InstanceAddress(BaseModel):
    host: str = Field(
        min_length=1, max_length=253, description="the model server's IP address or host name"
    )
    port: int = Field(description="its HTTP port (1..65535)")


class InstanceRef(BaseModel):
    ti_uuid: str = Field(max_length=64, description="a Task Instance id, as /ti/register gave")


class QueueQuery(BaseModel):
    model_name: str | None = Field(None, max_length=128, description="none or empty: every model")
    metadata: TaskMetadata = Field(
        default_factory=lambda: TaskMetadata(),
        description="(an addition to the document) a task's, as /queue/submit takes it: the "
        "run time expected of such a task on each instance",
    )


class TaskRef(BaseModel):
    task_id: str = Field(max_length=128, description="task-<uuid>, as /queue/submit gave")


class ModelInstance(Answer):
    model_name: str
    ti_uuid: str


class InstanceRegistered(Answer):
    status: Literal["success"] = "success"
    message: str
    ti_uuid: str = Field(description="the Task Instance of its first model")
    instances: list[ModelInstance] = Field(
        description="(an addition to the document) one Task Instance per model it serves"
    )


class InstanceRemoved(Answer):
    status: Literal["success"] = "success"
    message: str
    ti_uuid: str


class TaskPlaced(Answer):
    status: Literal["success"] = "success"
    task_id: str = Field(description="task-<uuid>")
    scheduled_ti: str = Field(description="the Task Instance chosen; empty: none yet")


class InstanceQueue(Answer):
    model_name: str
    ti_uuid: str
    waiting_time_expect: float = Field(description="milliseconds")
    waiting_time_error: float = Field(description="milliseconds (a standard deviation)")
    run_time_expect: float = Field(
        description="(an addition to the document) milliseconds a task runs there once started"
    )
    run_time_error: float = Field(description="milliseconds (a standard deviation)")
    predicted_from: str = Field(
        description="fitted (on the tokens metadata tells), observed, worker, claimed, "
        "default or table"
    )


class InstanceQueues(Answer):
    status: Literal["success"] = "success"
    queues: list[InstanceQueue]


class InstanceRefused(ErrorAnswer):
    ti_uuid: str = Field(description="the Task Instance asked about; empty: none")


class SubmissionRefused(ErrorAnswer):
    task_id: Literal[""] = ""
    scheduled_ti: Literal[""] = ""


class QueuesRefused(ErrorAnswer):
    queues: list[InstanceQueue] = Field(default_factory=list)


class QueryRefused(ErrorAnswer):
    task_id: str = Field(description="as asked")


class TaskStatus(Answer):
    task_id: str
    task_status: str = Field(description="queued, scheduled, completed, failed or cancelled")
    scheduled_ti: str = Field(description="its Task Instance; empty: none yet")
    submit_time: float = Field(description="Unix seconds, to the millisecond")
    result: Any = Field(description="the output once completed, the error once failed")


def _hex(worker: bytes | None) -> str:
    return worker.hex() if worker else ""


# How the API answers each refusal of the node's façade.
REFUSAL_STATUS: dict[type[Refusal], int] = {
    NotFound: 404,
    Invalid: 422,
    Unavailable: 409,
    UnknownChoice: 400,
    OverPriceCap: 503,
}

_REFUSALS = {
    400: "not one of the choices there are",
    401: "a missing or wrong bearer token",
    404: "no such job, task or role on this node",
    409: "this node cannot do that (it is no worker, or keeps no store)",
    422: "the request is invalid",
    503: "no worker can take it now (a health check failed, or all ask over the price cap)",
}


def refusals(
    *statuses: int, answer: type[ErrorAnswer] = ErrorAnswer
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of a route's error answers: 401 (the token's) and `statuses`
    (as `answer`)."""
    return {
        status: {
            "model": ErrorAnswer if status == 401 else answer,
            "description": _REFUSALS[status],
        }
        for status in sorted({401, *statuses})
    }
