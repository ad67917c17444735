"""One task on its scheduler (`TaskRun`), and what the run's parts read off a task's spec: its
kind (`Shape`: tasks of one kind share their candidates), its model, its form on the wire.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.lifecycle import TaskState
from p2psched.wire.codec import Budget
from p2psched.wire.deal import Receipt
from p2psched.wire.messages import Task, raw

Shape = tuple[str, str | None, str, float]  # driver, model, need, max price


class Spooled(enum.Enum):
    """A task's output, when it is too large to keep in memory (`DispatchConfig`'s
    `spool_result_bytes`): the node's store has it."""

    IN_STORE = "kept in the node's store"


@dataclass(slots=True)
class PassedOn:
    """The partial results of a task's try passed on: how many, their bytes (as they came),
    the SHA-256 of those bytes one after the other (which its result's items must match),
    and what decoding more of them may still build."""

    budget: Budget
    count: int = 0
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


@dataclass(slots=True)
class TaskRun:
    """A task as its scheduler runs it: its state in the lifecycle, the worker that holds it
    and at what price, its tries, and, once final, its output and receipt."""

    spec: TaskSpec
    state: TaskState = TaskState.UNSCHEDULED
    attempts: int = 0  # dispatches that ended in failure
    excluded: set[bytes] = field(default_factory=set)
    worker: bytes | None = None
    price: float = 0.0
    since: float = 0.0  # when it entered its state
    retry: bool = False
    error: str | None = None
    output: Any = None  # its value, or `Spooled.IN_STORE`
    output_bytes: int = 0  # its output as its receipt hashes it (MessagePack), once completed
    receipt: Receipt | None = None
    progress: float = 0.0
    stranded_since: float = math.nan  # when it last had no candidate
    deadline: float = math.inf  # of its current state (lease or timeout), when it has one
    input_bytes: int = 0  # its input, encoded
    due: float = math.inf  # its latest start, while queued
    sent_at: float = 0.0  # when it last went to a worker
    running_at: float = math.nan  # when its worker said it started it (this try)
    # A copy of a task (its job verifies results): networks and operators of the workers its
    # other copies went to ("net:<prefix>", "op:<label>"), which it keeps away from.
    apart: set[str] | None = None
    partials: PassedOn | None = None  # of its output from there, in parts
    moving: bool = False  # asked back from its worker's queue, to go elsewhere
    # Why workers failed it, the last first: a task that ends because no worker is left to
    # try ends with the reason its workers gave, not only with why the others declined.
    last_failure: str | None = None
    failed_with: Counter[str] = field(default_factory=Counter)  # reason -> workers

    def failed_by_worker(self, reason: str) -> None:
        self.last_failure = reason
        self.failed_with[reason] += 1

    @property
    def why_workers_failed(self) -> str | None:
        """The last worker's reason, and how many failed it so; None if none did."""
        if self.last_failure is None:
            return None
        n = self.failed_with[self.last_failure]
        return f"{self.last_failure} ({n} worker{'s' * (n > 1)} failed it so)"

    @property
    def placed_on(self) -> bytes | None:
        """The worker that ran it (its receipt's), or that holds it now; None if neither."""
        return self.receipt.worker if self.receipt is not None else self.worker


def worker_name(worker: bytes) -> str:
    """A worker as a task's history names it: as `p2psched tasks` shows its id."""
    return f"worker {worker.hex()[:16]}"


def slots_of(profile: Profile) -> int:
    """Tasks a worker runs at once, as far as its ad tells: one per GPU, or its free slots."""
    return max(1, len(profile.gpus), profile.free_slots)


def shape_of(spec: TaskSpec) -> Shape:
    return (spec.driver, model_of(spec), _need_text(spec.need), spec.max_price)


@functools.lru_cache(maxsize=4096)
def _need_text(need: Need) -> str:
    # A job's tasks share a few needs: its text once for each, not once per task queued.
    return str(need)


def model_of(spec: TaskSpec) -> str | None:
    for c in spec.need.clauses:
        if c.field in ("model", "loaded"):
            return str(c.value)
    return None


def gpus_of(spec: TaskSpec) -> int:
    """The GPUs the task needs to itself (its job's resources.gpus), 0 if it does not say."""
    said = [c.value for c in spec.need.clauses if c.field == "gpus" and c.op in (">=", "=")]
    return int(max((v for v in said if isinstance(v, float)), default=0))


def wire_task(t: TaskRun) -> Task:
    spec = t.spec
    return Task(
        spec.task_id, spec.driver, model_of(spec), raw(spec.input), spec.timeout_s, gpus_of(spec)
    )
