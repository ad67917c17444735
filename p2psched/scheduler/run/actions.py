"""What a job's run asks its shell to do: dial a worker, send it a message, drop it, record
that a task ended, pass on part of a task's output, look for more workers, judge whether two
results agree (a job's compare command), have a worker prove its capacity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2psched.wire.messages import Send


@dataclass(frozen=True, slots=True)
class Connect:
    worker: bytes
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """Drop the channel to this worker: it broke a rule (the reason says which)."""

    worker: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Settled:
    """A task reached a final state (write its result out, update the display)."""

    task_id: str


@dataclass(frozen=True, slots=True)
class Streamed:
    """Part of a running task's output came from the worker that holds it (a streamed
    answer's chunk): hand it to whoever watches that task. Not kept: the result has it all."""

    task_id: str
    output: Any


@dataclass(frozen=True, slots=True)
class Discover:
    """Look for (more) workers: some tasks have no candidate left."""


@dataclass(frozen=True, slots=True)
class Compare:
    """Run the job's compare command on the results of tasks `a` and `b` (copies of one
    task), and tell the run with `JobRun.compared` whether they agree. `command` None: the
    job compares json, and one of the two is kept in the store only (too large to hold): the
    shell reads them and applies the json rule (`agreement.json_agree`)."""

    a: str
    b: str
    command: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Challenge:
    """Have this worker prove the capacity its ad claims (the job verifies it before giving it
    a task); tell the run with `JobRun.challenged` once the outcome is on its record."""

    worker: bytes


Action = Connect | Send | Close | Settled | Streamed | Discover | Compare | Challenge
__all__ = [
    "Action",
    "Challenge",
    "Close",
    "Compare",
    "Connect",
    "Discover",
    "Send",
    "Settled",
    "Streamed",
]
