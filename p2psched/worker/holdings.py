"""What the worker's task manager keeps of each scheduler's work, and the actions it gives
its shell: leases, tasks queued or running, late-binding places, the schedulers it knows, its
drivers' run times; `Start` and `Abort`. Plain records: the manager owns their meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from p2psched.resources.detect import Device
from p2psched.wire.messages import Send, Task


@dataclass(frozen=True, slots=True)
class Start:
    """Run this task now on `task.driver`, on `devices` (its GPUs); report with
    `TaskManager.finished`."""

    peer: bytes
    task: Task
    devices: tuple[Device, ...] = ()


@dataclass(frozen=True, slots=True)
class Abort:
    peer: bytes
    task_id: str


Action = Send | Start | Abort


@dataclass(slots=True)
class Leased:
    job: str
    price: float
    expires: float
    gpus: int = 0  # each of its tasks', as its commitment says (what it was priced for)


@dataclass(slots=True)
class Held:
    job: str
    price: float
    task: Task
    started: float = math.nan
    progress: float = 0.0


@dataclass(slots=True)
class Reservation:
    """Places in this worker's queue for tasks its scheduler has not bound yet (late
    binding): when one reaches a free slot, the scheduler is asked for a task (of `gpus`
    GPUs, at the least price for one)."""

    count: int
    gpus: int = 0


@dataclass(slots=True)
class Scheduler:
    public_key: bytes
    connected: bool = True
    next_beat: float = math.inf
    gone_at: float = math.inf  # when its channel went, while it is gone


@dataclass(slots=True)
class RunTimes:
    """Run times of one driver here, as an exponentially weighted mean and variance."""

    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def add(self, x: float) -> None:
        self.n += 1
        w = max(0.1, 1.0 / self.n)
        d = x - self.mean
        self.mean += w * d
        self.var = (1 - w) * (self.var + w * d * d)
