"""Which of this worker's GPUs each running task has, sans-I/O.

Owns: the devices in use, and by whom. A task that needs g GPUs (`Claim.count`) gets g
devices no other running task holds; an http task whose endpoint is bound to devices
(`[drivers.http] devices`) shares them with the other tasks routed there (their model server
batches them), and no task of its own gets them meanwhile.
Promises: `take` gives a task its devices, or None (it waits) while they are in use; a device
is held until `give_back`, which the task manager calls only once the task has ended (an
aborted one included); `refusal` says why a claim can never be met here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from p2psched.resources.detect import Device
from p2psched.wire.messages import Task
from p2psched.worker.driver_config import ANY_MODEL


@dataclass(frozen=True, slots=True)
class Claim:
    """What a task asks of the GPUs: `count` of its own, and the devices (NVML indexes) of
    its endpoint, which it shares."""

    count: int = 0
    shared: tuple[int, ...] = ()


@dataclass(slots=True)
class Devices:
    devices: tuple[Device, ...] = ()
    _own: dict[Hashable, tuple[int, ...]] = field(default_factory=dict)
    _sharing: dict[Hashable, tuple[int, ...]] = field(default_factory=dict)

    def refusal(self, claim: Claim) -> str | None:
        """Why `claim` can never be met on this worker, or None."""
        have = len(self.devices)
        if claim.count > have:
            return f"the task needs {claim.count} GPUs; this worker has {have}"
        return None

    def slots_held(self, gpus: int, slots: int) -> float:
        """How many of this worker's `slots` a task needing `gpus` GPUs to itself takes, by
        its part of the GPUs (all 4 of a 4-GPU, 4-slot worker: 4), never less than one (0
        GPUs: its slot's share). The worker prices a task by it."""
        have = len(self.devices)
        return max(1.0, gpus * slots / have) if gpus and have else 1.0

    def take(self, key: Hashable, claim: Claim) -> tuple[Device, ...] | None:
        """The devices the task `key` runs on now (its own, then those it shares), or None if
        they are not free yet."""
        owned = {i for held in self._own.values() for i in held}
        shared = {i for held in self._sharing.values() for i in held}
        if owned.intersection(claim.shared):
            return None
        free = [d.index for d in self.devices if d.index not in owned | shared]
        if len(free) < claim.count:
            return None
        mine = tuple(free[: claim.count])
        if mine:
            self._own[key] = mine
        if claim.shared:
            self._sharing[key] = claim.shared
        given = set(mine) | set(claim.shared)
        return tuple(d for d in self.devices if d.index in given)

    def give_back(self, key: Hashable) -> None:
        self._own.pop(key, None)
        self._sharing.pop(key, None)


@dataclass(frozen=True, slots=True)
class Claims:
    """What each task asks of the GPUs: a command its `gpus`, or else its slot's `share` of
    them; an http task, the devices its model's endpoint is bound to (`http`: by the model's
    name if `endpoints` has it, else the "*" endpoint's); the other drivers, none."""

    share: int = 0
    http: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    endpoints: frozenset[str] = frozenset()  # the models with an endpoint of their own

    def __call__(self, task: Task) -> Claim:
        if task.driver == "command":
            return Claim(task.gpus or self.share)
        if task.driver == "http":
            model = task.model if task.model in self.endpoints else None
            return Claim(0, self.http.get(model or ANY_MODEL, ()))
        return Claim()


def gpus_unpaid(tasks: list[Task], gpus: int) -> str | None:
    """Why one of these tasks may not run on a commitment for tasks of `gpus` GPUs: it asks
    for other GPUs than it was priced for (a scheduler may quote for 1 GPU, then send 4)."""
    t = next((t for t in tasks if t.gpus != gpus), None)
    if t is None:
        return None
    return f"task {t.id} asks for {gpus_said(t.gpus)}, but its commitment is for {gpus_said(gpus)}"


def gpus_said(gpus: int) -> str:
    """A task's `gpus` in words (0: its slot's share)."""
    return "a slot's share of GPUs" if gpus == 0 else f"{gpus} GPU{'s' * (gpus != 1)}"
