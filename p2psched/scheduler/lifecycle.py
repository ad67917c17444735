"""A task's lifecycle, as one table: every state a task can be in on its scheduler, and every move
between them. Everything that changes a task's state goes through `TaskState.to`.

Promises: a move the table does not list raises `IllegalTransition`; the three final states
(completed, failed, aborted, disputed; timed out counts as failed unless retried) have no way
out, so a task done is never run or counted again. A task whose job verifies results waits in
`verifying` after its result came, until enough copies agree (completed) or disagree (disputed).
"""

from __future__ import annotations

from enum import StrEnum


class IllegalTransition(RuntimeError):
    """A move the lifecycle does not allow: a bug in the caller, never the peer's doing."""


class TaskState(StrEnum):
    UNSCHEDULED = "unscheduled"  # derived from a job, not yet queued
    QUEUED = "queued"  # waiting for a worker
    NEGOTIATING = "negotiating"  # quotes asked or a commitment sent
    SCHEDULED = "scheduled"  # committed: a worker leased it a slot
    SENT = "sent"  # dispatched on the channel
    RUNNING = "running"  # the worker said it started
    VERIFYING = "verifying"  # result in, receipt verified; waiting for its copies' verdict
    COMPLETED = "completed"  # result in, receipt verified (and, verified, agreed with)
    DISPUTED = "disputed"  # its result disagreed with the one its job kept: not paid
    FAILED = "failed"  # out of retries, or no worker can take it
    ABORTED = "aborted"  # cancelled by its owner
    TIMED_OUT = "timed_out"  # ran past its timeout and is out of retries

    @property
    def final(self) -> bool:
        return not _MOVES[self]

    def to(self, new: TaskState) -> TaskState:
        if new not in _MOVES[self]:
            raise IllegalTransition(f"a task cannot go from {self.value} to {new.value}")
        return new


S = TaskState
# Back to QUEUED is the retry path: a worker lost, a lease expired, a heartbeat stopped, a
# driver failed, a receipt that did not verify. Whether retries are left is the caller's test.
_MOVES: dict[TaskState, frozenset[TaskState]] = {
    S.UNSCHEDULED: frozenset({S.QUEUED, S.ABORTED}),
    S.QUEUED: frozenset({S.NEGOTIATING, S.FAILED, S.ABORTED}),
    S.NEGOTIATING: frozenset({S.SCHEDULED, S.QUEUED, S.FAILED, S.ABORTED}),
    S.SCHEDULED: frozenset({S.SENT, S.QUEUED, S.FAILED, S.ABORTED}),
    S.SENT: frozenset(
        {S.RUNNING, S.COMPLETED, S.VERIFYING, S.QUEUED, S.FAILED, S.TIMED_OUT, S.ABORTED}
    ),
    S.RUNNING: frozenset({S.COMPLETED, S.VERIFYING, S.QUEUED, S.FAILED, S.TIMED_OUT, S.ABORTED}),
    # Failed: no quorum could be reached (its result is neither kept nor paid).
    S.VERIFYING: frozenset({S.COMPLETED, S.DISPUTED, S.FAILED, S.ABORTED}),
    S.COMPLETED: frozenset(),
    S.DISPUTED: frozenset(),
    S.FAILED: frozenset(),
    S.ABORTED: frozenset(),
    S.TIMED_OUT: frozenset(),
}
