"""What a node must not forget: the entries its cores hand the shell to make durable before
anything they caused leaves the node (a commitment sent, a result acknowledged).

Owns: the entry types. On the scheduler's side the job book (`scheduler.jobs`) emits
`JobOpened`, `JobResumed` and `JobFinished`, each `JobRun` emits `Moved`, `Committed`, `Charged`
and `Judged`, and the scheduler's `WorkerViews` `Reputation` and `Forgotten`; the worker's
`TaskManager` emits `Accepted` and `Issued`. `Store.record` writes a batch of them in one
transaction; `Store`'s reads give back what a restarted scheduler resumes.
Promises: entries are plain values (no references into a live core), so a batch can be written
after the step that made it; replaying a job's entries in order rebuilds its tasks' states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2psched.wire.deal import Commitment, Receipt


@dataclass(frozen=True, slots=True)
class JobOpened:
    """A job accepted by this node's scheduler: `spec` is the mapping it was parsed from."""

    job: str
    name: str
    spec: dict[str, Any]
    submitted_at: float
    mtr: float  # math.inf allowed
    budget: float  # math.inf allowed
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Moved:
    """A task changed state (see `lifecycle`), with why and where it now is: `reason` is this
    move's own, `error` the task's (what it last failed with, kept while it is retried)."""

    task: str
    job: str
    old: str
    new: str
    at: float
    reason: str | None
    worker: bytes | None  # who holds it now, if anyone
    price: float  # committed for it, while a worker holds it
    attempts: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Committed:
    """This scheduler signed `commitment` (money held for its tasks at its price each)."""

    commitment: Commitment
    worker_addresses: tuple[str, ...]  # where the worker was reached, to reach it again
    at: float


@dataclass(frozen=True, slots=True)
class Charged:
    """A verified receipt for a completed task: the money is spent, the result is kept. With
    `verdict` "pending", its result awaits verification against other copies: the result row
    is kept, the receipt recorded but not counted as spent until `Judged` says "agreed"."""

    receipt: Receipt
    worker_public_key: bytes
    output: bytes  # the task's output, MessagePack-encoded (what the receipt hashes)
    at: float
    keep: bool = True  # False: the receipt goes to the ledger, no result row (a paid-only job)
    verdict: str | None = None  # None: a plain paid receipt; "pending": awaiting verification


VERDICTS = ("agreed", "disputed", "unsettled")


@dataclass(frozen=True, slots=True)
class Judged:
    """The verdict on a task's pending receipt (`Charged` with verdict "pending"): "agreed"
    (it counts as spent), "disputed" (its result disagreed with the canonical one: never paid)
    or "unsettled" (no quorum was reached, or its job was cancelled first: never paid)."""

    job: str
    task: str
    verdict: str
    at: float


@dataclass(frozen=True, slots=True)
class Reputation:
    """What this node keeps of a worker's record across restarts (see `WorkerViews`):
    `skip_until`/`skip_reason`: barred for its reputation until then, and why."""

    worker: bytes
    succeeded: int
    failed: int
    stalls: int
    verified: int
    disputed: int
    clean: int  # verified since its last dispute
    duration_mismatches: int
    challenges_passed: int
    challenges_failed: int
    capacity: str  # "passed" | "failed" | "unknown": its last capacity challenge
    strikes: int  # disputes since it was last barred
    challenge_strikes: int  # failed challenges since it was last barred
    skip_until: float | None
    skip_reason: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class Forgotten:
    """A worker's record dropped from memory (the least recently seen, past the views'
    bound): its `Reputation` row goes too."""

    worker: bytes


@dataclass(frozen=True, slots=True)
class JobResumed:
    """A node started on the data dir took the job up again, unfinished."""

    job: str
    at: float


@dataclass(frozen=True, slots=True)
class JobFinished:
    job: str
    at: float


@dataclass(frozen=True, slots=True)
class Accepted:
    """A worker leased tasks under `commitment`, signed by the scheduler with this key."""

    commitment: Commitment
    scheduler_public_key: bytes
    at: float


@dataclass(frozen=True, slots=True)
class Issued:
    """A worker signed this receipt (earned, if it is ok)."""

    receipt: Receipt
    at: float


Entry = (
    JobOpened
    | JobResumed
    | Moved
    | Committed
    | Charged
    | Judged
    | JobFinished
    | Accepted
    | Issued
    | Reputation
    | Forgotten
)
