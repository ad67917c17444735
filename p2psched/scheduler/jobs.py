"""The jobs a node schedules: submitting one (spec → tasks → a `JobRun` driven over the
network), following it, cancelling it, and the JSON views the control API and the CLI show.

Owns: job ids, the order in which tasks settled (so a client can fetch results as they come,
each exactly once), and the rendering of results and receipts as JSON.
Promises: a job is accepted whole or not at all (its spec was validated before); its status is
always consistent with its tasks' states; an output too large to keep in memory is read from
the store only when asked for, one at a time (a results view names it instead).
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import trio

from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.as_json import json_number as json_number
from p2psched.scheduler.as_json import to_json as to_json
from p2psched.scheduler.job import (
    JobSpec,
    JobSpecError,
    TaskSpec,
    collector_paused,
    derive_tasks,
    job_deadline,
    job_mtr,
    parse_job,
)
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import DispatchConfig, JobRun, Spooled, TaskRun, VerifyPolicy
from p2psched.scheduler.service import Dispatcher
from p2psched.store import Store
from p2psched.store.journal import JobFinished, JobOpened, JobResumed
from p2psched.wire.deal import Receipt


@dataclass(slots=True)
class SubmittedJob:
    job_id: str
    spec: JobSpec
    run: JobRun
    submitted_at: float
    settled: list[str] = field(default_factory=list)  # task ids, in the order they settled
    finished_at: float | None = None
    done: trio.Event = field(default_factory=trio.Event)
    store: Store | None = None  # where outputs too large to keep in memory are
    resumed_at: float | None = None  # a node restarted on the data dir took it up then
    ephemeral: bool = False  # an OpenAI gateway request's: see `JobBook.submit`

    def status(self, now: float) -> dict[str, Any]:
        total = self.run.total
        tally = tally_of(self.run.counts(), total, self.finished_at is not None)
        final = tally["completed"] + tally["failed"]
        elapsed = (self.finished_at or now) - self.submitted_at
        eta = None
        if tally["completed"] and final < total:
            eta = elapsed / final * (total - final)
        return {
            "job": self.job_id,
            "name": self.spec.name,
            **tally,
            "spent": self.run.spent,
            "committed": self.run.held,
            "budget": json_number(self.run.budget),
            "submitted_at": self.submitted_at,
            "elapsed_s": elapsed,
            "eta_s": eta,
            "workers": len({t.placed_on for t in self.run.tasks.values()} - {None}),
            "unmatched": self.run.unmatched_report(),
            "resumed_at": self.resumed_at,
            "verification": self.run.verification_report(),
        }

    def task_view(self, t: TaskRun) -> dict[str, Any]:
        # A copy whose result waits for (or got) its verdict is no longer held by its worker:
        # its receipt names who ran it.
        worker = t.worker or (t.receipt.worker if t.receipt is not None else None)
        return {
            "task": t.spec.task_id,
            "index": t.spec.index,
            "name": t.spec.name,
            "state": t.state.value,
            "worker": worker.hex() if worker else None,
            "attempts": t.attempts,
            "error": t.error,
            "progress": t.progress,
        }

    def result_view(self, task_id: str, *, whole: bool = False) -> dict[str, Any]:
        """A settled task with its output, unless that is kept in the store (too large to
        show in a page of them) and not asked for `whole`: then `output_spooled`."""
        # A task run in copies (its job verifies results) shows the copy its job kept, if any.
        t = self.run.kept(task_id) or self.run.tasks[task_id]
        view = self.task_view(self.run.tasks[task_id])
        view["state"] = self.run.group_state(task_id).value
        if t is not self.run.tasks[task_id]:
            view["kept"] = t.spec.task_id
        task_id = t.spec.task_id
        spooled = t.output is Spooled.IN_STORE and not whole
        view["output"] = None if spooled else to_json(self.output(task_id))
        view["output_spooled"] = spooled
        view["receipt"] = None
        if t.receipt is not None:
            view["receipt"] = receipt_view(t.receipt, self.run.public_key_of(t.receipt.worker))
        return view

    def output(self, task_id: str) -> Any:
        """A task's output (None if it has none), from the store if it is kept there."""
        output = self.run.tasks[task_id].output
        if output is not Spooled.IN_STORE:
            return output
        assert self.store is not None  # (a run without one keeps every output)
        return self.store.stored_value(self.job_id, task_id)


FINAL = tuple(s.value for s in TaskState if s.final)  # the states a task never leaves


def tally_of(counts: Mapping[str, int], total: int, finished: bool) -> dict[str, Any]:
    """What a job's status says of its tasks' states: its own state (running until its
    every task is final; then cancelled if its owner cancelled any of them, failed if any
    other ended otherwise than completed, else completed) and its tasks counted."""
    completed = counts.get("completed", 0)
    final = sum(n for s, n in counts.items() if s in FINAL)
    if not finished:
        state = "running"
    elif counts.get("aborted"):
        state = "cancelled"
    else:
        state = "completed" if completed == total else "failed"
    return {
        "state": state,
        "total": total,
        "counts": dict(counts),
        "completed": completed,
        "failed": final - completed,
        "running": sum(counts.get(s, 0) for s in ("sent", "running")),
    }


def receipt_view(receipt: Receipt, worker_public_key: bytes | None) -> dict[str, Any]:
    """A worker's signed receipt as JSON, with the key that checks its signature."""
    key = worker_public_key.hex() if worker_public_key else None
    return {**receipt.to_json(), "worker_public_key": key}


log = logging.getLogger(__name__)
KEEP_FINISHED = 100
# Finished jobs of the OpenAI gateway's requests kept in memory, apart from the others: a busy
# gateway finishes hundreds a second, which would push every other job out of those kept.
KEEP_EPHEMERAL = 100
KEEP_EPHEMERAL_BYTES = 16 << 20  # ... and their outputs (encoded), in all


class JobBook:
    """The jobs this node has accepted, by id."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        nursery: trio.Nursery,
        *,
        config: DispatchConfig | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.nursery = nursery
        self.config = config or DispatchConfig()
        self.jobs: dict[str, SubmittedJob] = {}
        self._ephemeral_finished: deque[str] = deque()  # oldest first

    @collector_paused()  # (a job's tasks, its run: all live on)
    def submit(
        self,
        spec: JobSpec,
        doc: dict[str, Any] | None = None,
        *,
        found: list[WorkerAd] | None = None,
        job_id: str | None = None,
        ephemeral: bool = False,
    ) -> SubmittedJob:
        """Accept a job: `doc` is the mapping `spec` was parsed from (kept, to resume it);
        `found`, workers just found for it (see `Dispatcher.add`); `job_id`, one the caller
        made unique (the design documents' `task-<uuid>`). `ephemeral`: a job whose asker
        waits on a connection to this process (an OpenAI gateway request): the store keeps
        only what it commits and pays (its ledger), not the job, which is never resumed (its
        asker is gone with the process); the newest `KEEP_EPHEMERAL` finished are kept in
        memory, apart from the other jobs."""
        # Task ids travel to workers, which key them by scheduler: a job id unique on this
        # node keeps a resubmitted job's tasks apart from the first run's.
        while job_id is None or job_id in self.jobs or self._stored(job_id):
            job_id = f"{spec.name}-{secrets.token_hex(4)}"
        tasks = derive_tasks(spec, job_id)
        now = self.dispatcher.clock()
        deadline = job_deadline(spec, now)
        if deadline is not None and deadline <= now:
            raise JobSpecError(
                [
                    f"{spec.name}: deadline: {spec.deadline}: already passed; give a later "
                    "time or a duration (for example 30m)"
                ]
            )
        mtr = job_mtr(spec, now)
        if doc is None:
            doc = spec.model_dump(mode="python", by_alias=True, exclude_defaults=True)
        opened = JobOpened(job_id, spec.name, doc, now, mtr, spec.budget.total, deadline)
        if not ephemeral:
            self.dispatcher.record([opened])
        job = self._start(spec, opened, tasks, found=found, ephemeral=ephemeral)
        log.log(
            _level(job),
            "job %s submitted: %d tasks",
            job_id,
            len(job.run.tasks),
            extra={"job": job_id},
        )
        return job

    @collector_paused()
    def resume(self) -> list[SubmittedJob]:
        """Take up the jobs the store has unfinished (this node stopped, or was killed)."""
        store = self.dispatcher.store
        resumed = []
        for stored in store.unfinished_jobs() if store is not None else []:
            try:
                spec = parse_job(stored.spec, source=f"stored job {stored.job}")
            except JobSpecError as e:
                log.error("cannot resume job %s: %s", stored.job, e, extra={"job": stored.job})
                continue
            tasks = derive_tasks(spec, stored.job)
            opened = JobOpened(
                stored.job,
                stored.name,
                stored.spec,
                stored.submitted_at,
                stored.mtr,
                stored.budget,
                stored.deadline,
            )
            assert store is not None
            restore = partial(
                JobRun.restore,
                tasks=stored.tasks,
                addresses=store.peer_addresses,
                now=self.dispatcher.clock(),
            )
            resumed.append(self._start(spec, opened, tasks, restore))
        return resumed

    def _start(
        self,
        spec: JobSpec,
        opened: JobOpened,
        tasks: list[TaskSpec],
        restore: Callable[[JobRun], None] | None = None,
        *,
        found: list[WorkerAd] | None = None,
        ephemeral: bool = False,
    ) -> SubmittedJob:
        now = self.dispatcher.clock()
        job_id = opened.job
        run = JobRun(
            self.dispatcher.identity,
            job_id,
            tasks,
            mtr=opened.mtr,
            budget=opened.budget,
            now=now,
            config=replace(self.config, no_worker_s=spec.wait_for_worker),
            rids=self.dispatcher.rids,
            deadline=opened.deadline,
            strategy=self.dispatcher.strategy,
            predictor=self.dispatcher.predictor,
            views=self.dispatcher.views,
            durable=self.dispatcher.store is not None,
            paid_only=ephemeral,
            rival=self.dispatcher.rival,
            stats=self.dispatcher.stats,
            verify=VerifyPolicy.of(spec.verify),
        )
        job = SubmittedJob(
            job_id, spec, run, opened.submitted_at, store=self.dispatcher.store, ephemeral=ephemeral
        )
        if restore is not None:
            job.resumed_at = now
            self.dispatcher.record([JobResumed(job_id, now)])  # (its status says so, after too)
            run.journal.clear()  # the queueing of a restarted job's tasks is not news
            restore(run)
            job.settled = run.settled()
        self.jobs[job_id] = job
        if not ephemeral:
            self._forget_old()
        dispatched = self.dispatcher.add(
            run, lambda _, task_id: job.settled.append(task_id), found=found
        )

        async def finish() -> None:
            await dispatched.wait()
            job.finished_at = self.dispatcher.clock()
            if ephemeral:
                self._keep_ephemeral(job_id)
            else:
                self.dispatcher.record([JobFinished(job_id, job.finished_at)])
            job.done.set()
            _log_finished(job)

        self.nursery.start_soon(finish)
        return job

    def _stored(self, job_id: str) -> bool:
        store = self.dispatcher.store
        return store is not None and store.has_job(job_id)

    def _forget_old(self) -> None:
        """A node runs for months: it keeps the last KEEP_FINISHED finished jobs, not all."""
        finished = [j for j in self.jobs.values() if j.finished_at is not None and not j.ephemeral]
        for job in sorted(finished, key=lambda j: j.finished_at or 0.0)[:-KEEP_FINISHED]:
            del self.jobs[job.job_id]

    def _keep_ephemeral(self, job_id: str) -> None:
        """An ephemeral job finished: keep it, and forget the oldest beyond KEEP_EPHEMERAL, or
        while the outputs kept come to over KEEP_EPHEMERAL_BYTES (they are held in memory: a
        worker may make each as large as a result may be). Its request, if it still reads the
        output, holds the job itself."""
        kept = self._ephemeral_finished
        kept.append(job_id)
        held = sum(_output_bytes(self.jobs[j]) for j in kept if j in self.jobs)
        while len(kept) > KEEP_EPHEMERAL or held > KEEP_EPHEMERAL_BYTES:
            gone = self.jobs.pop(kept.popleft(), None)
            held -= _output_bytes(gone) if gone is not None else 0

    def cancel(self, job_id: str, task_ids: list[str] | None = None) -> list[str]:
        return self.dispatcher.cancel(job_id, task_ids)


def _output_bytes(job: SubmittedJob) -> int:
    """What a job's outputs came to (encoded)."""
    return sum(t.output_bytes for t in job.run.tasks.values())


def _level(job: SubmittedJob) -> int:
    """An ephemeral job's start and end are not news: a busy gateway has hundreds a second
    (a failed request is told to its client, and counted in the metrics)."""
    return logging.DEBUG if job.ephemeral else logging.INFO


def _log_finished(job: SubmittedJob) -> None:
    counts = job.run.counts()
    failed = [t for t in job.run.tasks.values() if t.state.final and t.state.value != "completed"]
    first = f"; first failure: {failed[0].spec.task_id}: {failed[0].error}" if failed else ""
    log.log(
        _level(job),
        "job %s finished in %.1f s: %s%s",
        job.job_id,
        (job.finished_at or job.submitted_at) - job.submitted_at,
        ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
        first,
        extra={"job": job.job_id, "counts": dict(counts), "spent": job.run.spent},
    )
