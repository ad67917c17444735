"""The scheduler's `JobRun` and the workers' `TaskManager`, joined by an in-memory link on a
virtual clock: negotiation, dispatch, receipts, and every way a task goes back to the queue."""

from __future__ import annotations

from p2psched.scheduler.lifecycle import TaskState

S = TaskState
