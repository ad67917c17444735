"""The jobs a node keeps only in its store (run before it restarted, or forgotten from memory
to bound it), shown in the shapes the live ones are (`jobs.SubmittedJob`'s views).

Owns: a stored job's status, tasks and results as those views, and its tasks' names, derived
again from the spec it was submitted as.
Promises: a job shows the states, counts, errors, spending and workers it showed live, and
its results and receipts as they came; what only a running job has shows as a finished job's
does (no money committed, no ETA, no need unmet; a task not completed has progress 0).
"""

from __future__ import annotations

from typing import Any

from p2psched.scheduler.job import JobSpecError, derive_tasks, parse_job
from p2psched.scheduler.jobs import FINAL, json_number, receipt_view, tally_of, to_json
from p2psched.store import Store
from p2psched.store.queries import JobListing, StoredTask
from p2psched.wire.codec import decode
from p2psched.wire.deal import task_id_for
from p2psched.wire.noise import MAX_FRAME


def past_status(job: JobListing, now: float) -> dict[str, Any]:
    """`SubmittedJob.status` of a job the store keeps."""
    total = sum(job.counts.values())  # (every task is recorded as it is queued)
    return {
        "job": job.job,
        "name": job.name,
        **tally_of(job.counts, total, job.finished_at is not None),
        "spent": job.spent,
        "committed": 0.0,
        "budget": json_number(job.budget),
        "submitted_at": job.submitted_at,
        "elapsed_s": (job.finished_at or now) - job.submitted_at,
        "eta_s": None,
        "workers": job.workers,
        "unmatched": [],
        "resumed_at": job.resumed_at,
    }


class PastTasks:
    """The tasks of one job the store keeps, as `SubmittedJob.task_view` and `result_view`
    show them."""

    def __init__(self, store: Store, job_id: str, spec: dict[str, Any]) -> None:
        self.store, self.job_id = store, job_id
        self._named = _names(job_id, spec)

    def tasks(self, state: str | None) -> list[dict[str, Any]]:
        return [self._view(t) for t in self.store.job_tasks(self.job_id, state)]

    def settled(self, after: int, limit: int, max_bytes: int) -> list[dict[str, Any]]:
        """From the `after`-th task that settled, as many as fit `limit` and `max_bytes`."""
        page = self.store.settled_tasks(self.job_id, FINAL, after, limit, max_bytes)
        return [self._result(t) for t in page]

    def _view(self, t: StoredTask) -> dict[str, Any]:
        index, name = self._named.get(t.task) or _unnamed(t.task)
        return {
            "task": t.task,
            "index": index,
            "name": name,
            "state": t.state,
            "worker": t.worker.hex() if t.worker else None,
            "attempts": t.attempts,
            "error": t.error,
            "progress": 1.0 if t.state == "completed" else 0.0,
        }

    def _result(self, t: StoredTask) -> dict[str, Any]:
        # A task run in copies shows the one its job kept (as a live job shows it).
        kept = self.store.kept_copy(self.job_id, t.task) if t.state != "completed" else None
        if kept is not None:
            view = {**self._view(t), "state": "completed", "progress": 1.0, "kept": kept.task}
            t = kept
        else:
            view = self._view(t)
        spooled = t.output_file is not None
        shown = t.state == "completed" and not spooled  # (as a live job shows it)
        output = t.output if shown else None
        view["output"] = None if output is None else to_json(decode(output, MAX_FRAME))
        view["output_spooled"] = spooled
        view["receipt"] = None
        if t.receipt is not None:
            view["receipt"] = receipt_view(t.receipt, t.worker_public_key)
        return view


def _names(job_id: str, spec: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Task id -> (index, name), as deriving the job's tasks again gives them; empty if the
    spec no longer parses (a newer p2psched's, say): its tasks are then named by index."""
    try:
        derived = derive_tasks(parse_job(spec, source=f"stored job {job_id}"))
    except JobSpecError:
        return {}
    return {task_id_for(job_id, t.index): (t.index, t.name) for t in derived}


def _unnamed(task_id: str) -> tuple[int, str]:
    """A task the spec does not derive (one added to the job later): named by its index."""
    index = task_id.rpartition("/")[2]
    return (int(index), index) if index.isdigit() else (0, task_id)
