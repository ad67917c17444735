"""What a reader of a running node sees: plain, frozen snapshots of its state, taken by the
node's façade (`node.status.NodeFacade`) and shown as they are by the control API, its
dashboard and the CLI.

Promises: a snapshot is a copy taken at one moment; nothing in it changes afterwards, and
nothing in it reaches back into the node. A JSON snapshot (a pydantic model) names exactly the
fields the control API answers with, ids in hex, and refuses a field it does not describe, so
that `/openapi.json` stays true to the answers. The counters the metrics read are dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from p2psched.gate.relay import RelayLimits
from p2psched.histogram import Histogram


class Snapshot(BaseModel):
    # `forbid`: a view that grows a field fails loudly until its model describes it.
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- the node and its gate -------------------------------------------------------------------


class NodeInfo(Snapshot):
    node_id: str
    roles: tuple[str, ...] = Field(description="worker, gate, scheduler: what this node runs")
    dht: str = Field(description="HOST:PORT of its DHT (UDP)")
    channel: str | None = Field(description="where schedulers reach its worker; null: no worker")
    reachability: str | None = Field(description="public or private: how schedulers reach it")
    reachability_why: str | None
    relay_moves: int = Field(description="times its worker's relay reservation changed gates")
    routing_table: int = Field(description="contacts in its DHT routing table")
    jobs: int = Field(description="jobs it keeps in memory")


class Reservation(Snapshot):
    peer: str
    ip: str
    since: float = Field(description="seconds it has been held")
    expires_in: float


class Circuit(Snapshot):
    id: int
    from_: str = Field(alias="from", description="the node that asked for it")
    to: str = Field(description="the worker it reaches")
    up: bool = Field(description="false while waiting for the worker to take it up")
    open_for: float
    bytes: int = Field(description="carried, both ways")


class GateStatus(Snapshot):
    relay: str = Field(description="HOST:PORT of the relay (TCP)")
    reservations: tuple[Reservation, ...]
    circuits: tuple[Circuit, ...]
    counters: dict[str, int]
    limits: RelayLimits


# -- jobs and their tasks -------------------------------------------------------------------


class JobAccepted(Snapshot):
    job: str
    tasks: int


class Unmatched(Snapshot):
    need: str
    tasks: int = Field(description="its tasks still queued")
    why: str = Field(description="the nearest misses: which clause each worker found fails")


class VerificationCost(Snapshot):
    """What verifying a job's results (its `verify:`) cost so far."""

    copies: int = Field(description="copies run beyond one per task")
    checked: int = Field(description="tasks whose result was compared with another's")
    disputed: int = Field(description="results that disagreed with the one kept: not paid")
    no_quorum: int = Field(description="tasks whose results never agreed enough: none kept")
    extra_paid: float = Field(description="paid for agreeing copies beyond the kept one")
    copies_by_state: dict[str, int] = Field(description="the copies beyond the first, by state")


class JobStatus(Snapshot):
    job: str
    name: str
    state: Literal["running", "completed", "failed", "cancelled"] = Field(
        description="running until its every task is final; then cancelled if its owner "
        "cancelled any of them, failed if any other ended otherwise than completed, else "
        "completed"
    )
    total: int
    counts: dict[str, int] = Field(description="tasks by state")
    completed: int
    failed: int = Field(description="tasks that ended otherwise than completed")
    running: int = Field(description="tasks sent to or running on a worker")
    spent: float
    committed: float = Field(description="money held for tasks committed to workers")
    budget: float | str = Field(description='a number, or "inf" for no limit')
    submitted_at: float
    elapsed_s: float
    eta_s: float | None
    workers: int = Field(description="workers its tasks ran or are placed on")
    unmatched: list[Unmatched] = Field(
        default_factory=list,
        description="needs of queued tasks that the last look for workers found none for",
    )
    resumed_at: float | None = Field(
        default=None,
        description="when a node started on its data dir took it up again, unfinished; "
        "null if it has run since it was submitted",
    )
    verification: VerificationCost | None = Field(
        default=None, description="its `verify:`'s cost; null if it verifies nothing"
    )


class TaskView(Snapshot):
    task: str
    index: int
    name: str
    state: str
    worker: str | None
    attempts: int
    error: str | None
    progress: float


class BatchProofView(Snapshot):
    """Where a receipt sits in the batch its worker signed at once (hashes in hex)."""

    index: int
    path: list[str] = Field(description="the sibling hashes from its leaf up to the root")


class ReceiptView(Snapshot):
    """The worker's signed receipt, bytes in hex, with the key that checks its signature."""

    worker: str
    scheduler: str
    job: str
    task: str
    ok: bool
    result_hash: str
    duration: float
    price: float
    finished_at: float
    sig: str
    batch: BatchProofView | None = Field(
        default=None, description="signed in a batch: `sig` signs the root this leads to"
    )
    worker_public_key: str | None


class TaskResult(TaskView):
    output: Any = Field(description="the task's output as JSON (bytes as {base64: ...})")
    output_spooled: bool = Field(
        description="the output is too large to show here (`output` is null): "
        "GET /v1/jobs/{job}/tasks/{index}/output has it, as MessagePack"
    )
    receipt: ReceiptView | None
    kept: str | None = Field(
        default=None,
        description="a task run in copies: the copy whose result is kept, when not the task "
        "itself (its output and receipt are that copy's)",
    )


class ResultsPage(Snapshot):
    next: int = Field(description="`after` for the next page")
    results: tuple[TaskResult, ...]


class Transition(Snapshot):
    from_: str = Field(alias="from")
    to: str
    at: float
    reason: str | None


class TaskHistory(Snapshot):
    task: str
    state: str
    transitions: tuple[Transition, ...]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as the design documents' task queries show it: where it went and how it
    ended; `result` is its output (as JSON) once completed, its error once failed."""

    task: str
    state: str
    worker: bytes | None
    submitted_at: float
    result: Any


class Failure(Snapshot):
    job: str
    task: str
    worker: str | None
    reason: str | None
    outcome: str = Field(description="failed, stalled, timed_out, ...")
    at: float


# -- the scheduler's policy and what it knows of workers -----------------------------------


class SchedulerSettings(Snapshot):
    strategy: str
    strategies: tuple[str, ...]
    predict_mode: str
    predict_modes: tuple[str, ...]


class LastTask(Snapshot):
    task: str
    at: float
    outcome: Literal["ok", "failed", "stalled"]
    reason: str | None


class ModelRuns(Snapshot):
    model: str | None
    count: int
    mean_run: float


class Performance(Snapshot):
    models: tuple[ModelRuns, ...]


class Reputation(Snapshot):
    """What checking a worker's results and claims found (this node's own record, kept
    across restarts)."""

    verified: int = Field(description="results that agreed with the canonical one")
    disputed: int = Field(description="results that disagreed with it (not paid)")
    clean: int = Field(description="results verified since its last dispute")
    duration_mismatches: int = Field(description="receipts whose run time was far from measured")
    challenges_passed: int
    challenges_failed: int
    capacity: Literal["passed", "failed", "unknown"] = Field(
        description="its last capacity challenge"
    )
    barred_until: float | None = Field(description="skipped for its reputation until then")
    barred_for: str | None
    barred: bool = Field(description="skipped for its reputation now")


class WorkerRecord(Snapshot):
    """This node's own record of a worker: its outcomes, run times, circuit breaker and
    reputation."""

    worker: str
    succeeded_tasks: int
    failed_tasks: int
    stalls: int
    consecutive_failures: int
    last_task: LastTask | None
    performance: Performance
    skipped_until: float | None
    reputation: Reputation
    state: Literal["closed", "open", "half-open"]
    penalty: float = Field(description=">= 1: how much worse it ranks for its record")


@dataclass(frozen=True, slots=True)
class WorkerWait:
    """What the predictor expects of a worker for a model (None: any), in seconds."""

    worker: bytes
    model: str | None
    wait_mean: float
    wait_err: float
    run_mean: float
    source: str
    record: WorkerRecord | None


class Gpu(Snapshot):
    model: str
    family: str
    vram_gb: float
    driver: str


class Cpu(Snapshot):
    model: str
    cores: int


class Workload(Snapshot):
    """How busy a worker said it was when it last republished its ad, each 0..1 of its
    capacity: its CPU's load, its RAM and GPU memory in use, its GPUs' mean utilization."""

    cpu: float
    ram: float
    gpu: float
    vram: float


class WorkerAdView(Snapshot):
    """A worker's ad, as found in the DHT."""

    node_id: str
    gpus: tuple[Gpu, ...]
    ram_gb: float
    cpu: Cpu
    disk_gb: float
    models: tuple[str, ...]
    loaded_models: tuple[str, ...]
    price: float
    drivers: tuple[str, ...]
    free_slots: int
    workload: Workload
    labels: dict[str, str]
    addresses: tuple[str, ...]
    expires_in: float
    reputation: Reputation | None = Field(
        default=None, description="this node's record of its results and claims, if any"
    )


class Peer(Snapshot):
    node_id: str
    address: str
    last_seen_s: float
    failures: int = Field(description="unanswered requests in a row")


# -- the ledger ------------------------------------------------------------------------------


class LedgerJob(Snapshot):
    job: str
    committed: float
    spent: float
    tasks_paid: int
    pending: int = Field(description="receipts whose results await verification (not spent)")
    disputed: int = Field(description="receipts disputed or left unsettled (never spent)")


class LedgerPeer(Snapshot):
    peer: str
    spent: float = Field(description="this node paid them")
    earned: float = Field(description="they paid this node")
    disputed: int = Field(description="their receipts this node disputed or left unsettled")


class DisputedReceipt(Snapshot):
    """A receipt not paid: its result disagreed with the canonical one ("disputed"), or no
    quorum settled it ("unsettled")."""

    job: str
    task: str
    peer: str
    amount: float = Field(description="what it asked for")
    verdict: Literal["disputed", "unsettled"]
    at: float


class Ledger(Snapshot):
    jobs: tuple[LedgerJob, ...]
    peers: tuple[LedgerPeer, ...]
    spent: float
    earned: float
    disputed: tuple[DisputedReceipt, ...] = Field(description="the newest 100, newest first")
    problems: tuple[str, ...] | None = Field(
        None,
        exclude_if=lambda problems: problems is None,
        description="only when verified: every problem found; empty when all is well",
    )


# -- the worker ------------------------------------------------------------------------------


class DrainState(Snapshot):
    draining: bool
    held: int = Field(description="tasks it still holds (leased, queued or running)")


class CapacityCheck(Snapshot):
    """How a capacity challenge of a worker ended (`p2psched challenge`)."""

    worker: str = Field(description="its node id, hex")
    passed: bool
    refused: bool = Field(description="it declined, or was not reached: nothing is known")
    reason: str | None = Field(description="why it failed or was refused")
    n: int = Field(description="the matrices' size (n x n)")
    rounds: int = Field(1, description="products asked for, each of two n x n matrices")
    rows: int = Field(description="rows of the products opened and checked")
    expected_s: float = Field(description="what the worker's ad implies the product takes")
    limit_s: float = Field(description="the most its product's root could take to pass")
    measured_s: float | None = Field(description="from the ask to the root, as seen here")
    claimed_s: float | None = Field(description="what the worker said the product took")
    price: float = Field(description="paid for it (only if it passed)")


# -- counters, for the metrics ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchedulerCounters:
    jobs_running: int
    jobs_done: int
    tasks: Mapping[str, int]  # of the running jobs, by state
    queue_wait: Histogram
    negotiation: Mapping[str, int]  # steps of the deal, by outcome
    outcomes: Mapping[str, int]  # final states reached, and retried
    workers_connected: int
    frame_budget_waits: int  # times a channel waited for room to read a large message
    partials: Mapping[str, int]  # partial results passed on, refused


@dataclass(frozen=True, slots=True)
class DhtCounters:
    rpcs_sent: Mapping[tuple[str, str], int]  # (type, outcome)
    rpcs_received: Mapping[tuple[str, str], int]
    round_trips: Mapping[str, Histogram]  # by type
    events: Mapping[str, int]  # the core's counters: dropped_<reason>, datagrams_in, ...
    routing_contacts: int
    records: int
    record_bytes: int


@dataclass(frozen=True, slots=True)
class RelayCounters:
    reservations: int
    circuits_up: int
    circuits_pending: int
    events: Mapping[str, int]  # reservations_<outcome>, circuits_<event>, bytes_relayed, ...


@dataclass(frozen=True, slots=True)
class WorkerCounters:
    slots: int
    free_slots: int
    running: int
    tasks_held: int  # leased, queued or running
    unacked: int
    unacked_bytes: int
    draining: bool
    completed: int
    run_seconds: Mapping[str, Histogram]  # by driver
    relay_moves: int | None  # None: it takes no relay
    connections_shed: int  # dropped at its listener: too many from one address, or in all
    frame_budget_waits: int  # times a channel waited for room to read a large message


# -- model tasks (the OpenAI-compatible gateway) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model that workers with the http driver advertise, and how many of them."""

    model: str
    workers: int


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """How a one-task job for a model ended: its final state, its output (as JSON) once
    completed, else its error; `tries`: the workers that failed it (0: none took it)."""

    task: str
    state: str
    output: Any
    error: str | None
    tries: int
    final: bool = True  # False: the channel of its parts was ended before it was (`error` why)
