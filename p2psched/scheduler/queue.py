"""The order in which a scheduler's queued tasks get workers: earliest latest-start first.

Owns: how long a task may stay queued (from its priority, or from its job's deadline), its latest
start time, and the heap of queued tasks.
Promises: a task that came back from a failure is served before every first try (it has waited
once already); otherwise the task whose latest start comes first is served first (earliest
deadline first), ties in the job's own order. Later tasks of a large job have later latest
starts, `PACE_S` apart: a job of 100,000 tasks cannot all be due at once, and a small job
submitted after it is due before most of it (aging without a separate aging pass). Entries of
tasks no longer queued are skipped by the caller and dropped by `prune`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

MAX_WAIT_P0_S = 3600.0  # priority 0 may wait an hour; each step of priority halves it
PACE_S = 0.01  # between the latest starts of a job's consecutive first tries

Entry = tuple[int, float, int, str]  # (0 = retry | 1, latest start, index, task id)


def max_wait_s(priority: int) -> float:
    """Priority 0..9 (9 most urgent): 1 h, 30 min, ... 7 s."""
    return MAX_WAIT_P0_S / 2.0**priority


def latest_start(
    enqueued_at: float,
    priority: int,
    index: int,
    *,
    deadline: float | None = None,
    run_s: float = 0.0,
) -> float:
    """When the task must start at the latest: its wait allowance from now, paced by its place
    in the job, and never later than its job's deadline less its expected run time."""
    t = enqueued_at + max_wait_s(priority) + index * PACE_S
    if deadline is not None:
        t = min(t, deadline - run_s)
    return t


class TaskQueue:
    def __init__(self) -> None:
        self._heap: list[Entry] = []

    def __len__(self) -> int:
        """Entries, stale ones included (the caller counts its queued tasks itself)."""
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def push(self, task_id: str, due: float, index: int, *, retry: bool) -> None:
        heapq.heappush(self._heap, (0 if retry else 1, due, index, task_id))

    def head(self) -> Entry:
        return self._heap[0]

    def pop(self) -> Entry:
        return heapq.heappop(self._heap)

    def put_back(self, entries: list[Entry]) -> None:
        for entry in entries:
            heapq.heappush(self._heap, entry)

    def task_ids(self) -> list[str]:
        """The task ids with entries, in no particular order (stale ones included)."""
        return [e[3] for e in self._heap]

    def prune(self, queued: Callable[[str], bool]) -> None:
        """Drop the entries of tasks no longer queued (a cancel empties the queue at once)."""
        self._heap = [e for e in self._heap if queued(e[3])]
        heapq.heapify(self._heap)
