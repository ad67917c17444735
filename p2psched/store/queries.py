"""Reading a store back: what a restarted scheduler resumes, and what the node's API shows of
jobs, tasks and their history.

Owns: the records a read returns (`StoredJob`, `StoredTask`, `JobListing`) and the queries
behind them, as `StoreReads`, which `Store` is made of.
Promises: reads never write; limits come back as `math.inf` when unlimited, receipts as the
signed documents they were stored as; a result kept in a file is never read into memory by
a query of many (it comes back as its file's name: `stored_output` reads one).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psched.store.schema import document, limit_out
from p2psched.wire.deal import Receipt


@dataclass(frozen=True, slots=True)
class StoredTask:
    task: str
    state: str
    worker: bytes | None
    price: float
    attempts: int
    error: str | None
    since: float
    # Set once the task's result is in (it completed and its receipt verified):
    output: bytes | None = None  # MessagePack, as the receipt hashes it (empty: in its file)
    receipt: Receipt | None = None
    worker_public_key: bytes | None = None
    output_file: str | None = None  # in the store's outputs folder, when too large for its row


@dataclass(frozen=True, slots=True)
class StoredJob:
    job: str
    name: str
    spec: dict[str, Any]
    submitted_at: float
    mtr: float  # math.inf when unlimited
    budget: float  # math.inf when unlimited
    deadline: float | None
    tasks: dict[str, StoredTask] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobListing:
    job: str
    name: str
    submitted_at: float
    finished_at: float | None
    counts: dict[str, int]  # tasks by state


class StoreReads:
    """The read side of `Store`, over its connection."""

    _db: sqlite3.Connection
    outputs: Path  # the folder of the results too large for the file

    def unfinished_jobs(self) -> list[StoredJob]:
        """The jobs to resume, oldest first, with every task's state and any results."""
        jobs: dict[str, StoredJob] = {}
        for row in self._db.execute(
            "SELECT id, name, spec, submitted_at, mtr, budget, deadline FROM jobs "
            "WHERE finished_at IS NULL ORDER BY submitted_at, id"
        ):
            jobs[row[0]] = StoredJob(
                job=row[0],
                name=row[1],
                spec=json.loads(row[2]),
                submitted_at=row[3],
                mtr=limit_out(row[4]),
                budget=limit_out(row[5]),
                deadline=row[6],
            )
        for row in self._db.execute(
            "SELECT t.job, t.id, t.state, t.worker, t.price, t.attempts, t.error, t.since, "
            "r.output, r.receipt, r.worker_public_key, r.output_file "
            "FROM tasks t JOIN jobs j ON j.id = t.job "
            "LEFT JOIN results r ON r.job = t.job AND r.task = t.id "
            "WHERE j.finished_at IS NULL"
        ):
            receipt = None if row[9] is None else document(Receipt, row[9])
            jobs[row[0]].tasks[row[1]] = StoredTask(
                task=row[1],
                state=row[2],
                worker=row[3],
                price=row[4],
                attempts=row[5],
                error=row[6],
                since=row[7],
                output=row[8],
                receipt=receipt,
                worker_public_key=row[10],
                output_file=row[11],
            )
        return list(jobs.values())

    def task(self, job: str, task: str) -> tuple[float, StoredTask] | None:
        """(its job's submission time, the task as stored, with its result if any); None
        if the store never had it. For tasks of jobs no longer kept in memory."""
        row = self._db.execute(
            "SELECT j.submitted_at, t.state, t.worker, t.price, t.attempts, t.error, t.since, "
            "r.output, r.output_file FROM tasks t JOIN jobs j ON j.id = t.job "
            "LEFT JOIN results r ON r.job = t.job AND r.task = t.id "
            "WHERE t.job = ? AND t.id = ?",
            (job, task),
        ).fetchone()
        if row is None:
            return None
        stored = StoredTask(
            task, row[1], row[2], row[3], row[4], row[5], row[6], output=row[7], output_file=row[8]
        )
        return row[0], stored

    def stored_output(self, job: str, task: str) -> bytes | Path | None:
        """A task's output as its receipt hashes it (MessagePack): the bytes, or the file
        that holds them when they were too large for the store; None if it has no result."""
        row = self._db.execute(
            "SELECT output, output_file FROM results WHERE job = ? AND task = ?", (job, task)
        ).fetchone()
        if row is None:
            return None
        output: bytes = row[0]
        return output if row[1] is None else self.outputs / row[1]

    def spent(self, job: str) -> float:
        """What this node has paid for `job`: its ok receipts."""
        row = self._db.execute(
            "SELECT TOTAL(amount) FROM ledger "
            "WHERE job = ? AND role = 'paid' AND kind = 'receipt' AND ok",
            (job,),
        ).fetchone()
        return float(row[0])

    def transitions(self, job: str, task: str) -> list[dict[str, Any]]:
        """A task's every move, oldest first: from, to, when, why."""
        rows = self._db.execute(
            "SELECT old, new, at, reason FROM transitions WHERE job = ? AND task = ? ORDER BY seq",
            (job, task),
        )
        return [{"from": r[0], "to": r[1], "at": r[2], "reason": r[3]} for r in rows]

    def has_job(self, job: str) -> bool:
        return self._db.execute("SELECT 1 FROM jobs WHERE id = ?", (job,)).fetchone() is not None

    def peer_addresses(self, worker: bytes) -> tuple[str, ...]:
        """Where `worker` was last reached (empty if never)."""
        row = self._db.execute("SELECT addresses FROM peers WHERE worker = ?", (worker,)).fetchone()
        return () if row is None else tuple(json.loads(row[0]))

    def jobs(self, limit: int = 100) -> list[JobListing]:
        """The `limit` most recently submitted jobs, newest first, with task counts by state."""
        listing = [
            JobListing(job=r[0], name=r[1], submitted_at=r[2], finished_at=r[3], counts={})
            for r in self._db.execute(
                "SELECT id, name, submitted_at, finished_at FROM jobs "
                "ORDER BY submitted_at DESC, id LIMIT ?",
                (limit,),
            )
        ]
        for entry in listing:
            for state, n in self._db.execute(
                "SELECT state, COUNT(*) FROM tasks WHERE job = ? GROUP BY state", (entry.job,)
            ):
                entry.counts[state] = n
        return listing
