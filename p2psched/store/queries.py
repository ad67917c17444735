"""Reading a store back: what a restarted scheduler resumes, and what the node's API shows of
jobs, tasks and their history (of the jobs it no longer keeps in memory, all it shows).

Owns: the records a read returns (`StoredJob`, `StoredTask`, `JobListing`) and the queries
behind them, as `StoreReads`, which `Store` is made of.
Promises: reads never write; limits come back as `math.inf` when unlimited, receipts as the
signed documents they were stored as; a result kept in a file is never read into memory by
a query of many (it comes back as its file's name: `stored_output` reads one); a job's tasks
come in the order they were first recorded (for a job's own tasks, by their index), and a
listing of jobs reads only the jobs it lists (newest first), however many the store keeps.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psched.store.journal import Reputation
from p2psched.store.schema import SPENT, document, limit_out
from p2psched.wire.codec import decode
from p2psched.wire.deal import Receipt
from p2psched.wire.noise import MAX_FRAME


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
    """A job as a listing shows it: its row, and its tasks and payments counted."""

    job: str
    name: str
    submitted_at: float
    finished_at: float | None
    counts: dict[str, int]  # tasks by state
    budget: float  # math.inf when unlimited
    resumed_at: float | None  # when a restarted node took it up again; None: it never was
    spent: float  # its ok receipts
    workers: int  # that its tasks ran on, or are placed on


# The columns of a task row and its result, joined as `t` and `r`, as `_stored_task` reads them.
_TASK_COLUMNS = (
    "t.id, t.state, t.worker, t.price, t.attempts, t.error, t.since, "
    "r.output, r.receipt, r.worker_public_key, r.output_file"
)
_TASK_FROM = "tasks t LEFT JOIN results r ON r.job = t.job AND r.task = t.id"
# A task (`t`) as its job's status counts it: a task run in copies ("<id>~2", ...: its job
# verified results) is completed if one of them is (a result was kept), else as it ended
# itself; a copy is not a task of its own. (The range finds its copies on the primary key.)
_TASK_OUTCOME = (
    "CASE WHEN t.state = 'completed' OR EXISTS (SELECT 1 FROM tasks c WHERE c.job = t.job "
    "AND c.id > t.id || '~' AND c.id < t.id || '~:' AND c.state = 'completed') "
    "THEN 'completed' WHEN t.state = 'disputed' THEN 'failed' ELSE t.state END"
)


def _stored_task(row: tuple[Any, ...]) -> StoredTask:
    receipt = None if row[8] is None else document(Receipt, row[8])
    return StoredTask(
        task=row[0],
        state=row[1],
        worker=row[2],
        price=row[3],
        attempts=row[4],
        error=row[5],
        since=row[6],
        output=row[7],
        receipt=receipt,
        worker_public_key=row[9],
        output_file=row[10],
    )


# The types of a reputation row as `writes.Batch` writes it (SQLite keeps any type in a column).
_COUNTS = (
    "succeeded failed stalls verified disputed clean duration_mismatches challenges_passed "
    "challenges_failed strikes challenge_strikes"
).split()
_REPUTATION_TYPES = " AND ".join(
    [
        "typeof(worker) = 'blob'",
        *(f"typeof({c}) = 'integer'" for c in _COUNTS),
        "typeof(skip_until) IN ('real', 'integer', 'null')",
        "typeof(skip_reason) IN ('text', 'null')",
        "typeof(updated_at) IN ('real', 'integer')",
    ]
)


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
            f"SELECT t.job, {_TASK_COLUMNS} FROM {_TASK_FROM} JOIN jobs j ON j.id = t.job "
            "WHERE j.finished_at IS NULL"
        ):
            jobs[row[0]].tasks[row[1]] = _stored_task(row[1:])
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

    def stored_value(self, job: str, task: str) -> Any:
        """A task's output, decoded, from its row or its file; None if it has no result."""
        kept = self.stored_output(job, task)
        if isinstance(kept, Path):
            kept = kept.read_bytes()
        return None if kept is None else decode(kept, MAX_FRAME)

    def spent(self, job: str) -> float:
        """What this node has paid for `job`: its ok receipts, plain or agreed (not those
        awaiting verification, disputed or unsettled)."""
        row = self._db.execute(
            "SELECT TOTAL(amount) FROM ledger WHERE job = ? AND role = 'paid' "
            f"AND kind = 'receipt' AND {SPENT}",
            (job,),
        ).fetchone()
        return float(row[0])

    def reputations(self, limit: int) -> list[Reputation]:
        """The workers' records the scheduler kept, the `limit` most recently updated (oldest
        first), for a restarted node to take back. A row whose values are not of the types
        the node writes (edited by hand, damaged) is left out, not taken back to fail later."""
        rows = self._db.execute(
            "SELECT worker, succeeded, failed, stalls, verified, disputed, clean, "
            "duration_mismatches, challenges_passed, challenges_failed, capacity, strikes, "
            "challenge_strikes, skip_until, skip_reason, updated_at FROM reputation "
            f"WHERE {_REPUTATION_TYPES} ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [Reputation(*row) for row in reversed(rows)]

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
        """The `limit` most recently submitted jobs, newest first."""
        return self._listings("SELECT id FROM jobs ORDER BY submitted_at DESC, id LIMIT ?", limit)

    def job(self, job: str) -> JobListing | None:
        """One job as `jobs` lists it; None if the store never had it."""
        found = self._listings("SELECT ?", job)
        return found[0] if found else None

    def _listings(self, ids: str, arg: object) -> list[JobListing]:
        """The jobs whose ids the query `ids` (of one parameter, `arg`) selects, newest first:
        each query below reads the rows of those jobs only (through their indexes)."""
        db = self._db
        rows = db.execute(
            "SELECT id, name, submitted_at, finished_at, budget, resumed_at FROM jobs "
            f"WHERE id IN ({ids}) ORDER BY submitted_at DESC, id",
            (arg,),
        ).fetchall()
        counts: dict[str, dict[str, int]] = {r[0]: {} for r in rows}
        for job, state, n in db.execute(
            f"SELECT t.job, {_TASK_OUTCOME}, COUNT(*) FROM tasks t WHERE t.job IN ({ids}) "
            f"AND t.id NOT GLOB '*~[0-9]*' GROUP BY t.job, 2",
            (arg,),
        ):
            counts[job][state] = n
        workers = dict(
            db.execute(
                "SELECT job, COUNT(DISTINCT worker) FROM tasks "
                f"WHERE job IN ({ids}) AND worker IS NOT NULL GROUP BY job",
                (arg,),
            ).fetchall()
        )
        spent = dict(
            db.execute(
                "SELECT job, TOTAL(amount) FROM ledger WHERE job IN "
                f"({ids}) AND role = 'paid' AND kind = 'receipt' AND {SPENT} GROUP BY job",
                (arg,),
            ).fetchall()
        )
        return [
            JobListing(
                job=r[0],
                name=r[1],
                submitted_at=r[2],
                finished_at=r[3],
                counts=counts[r[0]],
                budget=limit_out(r[4]),
                resumed_at=r[5],
                spent=float(spent.get(r[0], 0.0)),
                workers=workers.get(r[0], 0),
            )
            for r in rows
        ]

    def job_spec(self, job: str) -> dict[str, Any] | None:
        """The mapping the job was submitted as; None if the store never had it."""
        row = self._db.execute("SELECT spec FROM jobs WHERE id = ?", (job,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def job_tasks(self, job: str, state: str | None = None) -> list[StoredTask]:
        """A job's tasks (those in `state`, if given), in the order they were first recorded,
        without their outputs (`output` is None: see `settled_tasks`)."""
        where, args = (
            ("t.job = ?", (job,)) if state is None else ("t.job = ? AND t.state = ?", (job, state))
        )
        return [
            _stored_task((*row, None, None, None, None))
            for row in self._db.execute(
                "SELECT t.id, t.state, t.worker, t.price, t.attempts, t.error, t.since "
                f"FROM tasks t WHERE {where} ORDER BY t.rowid",
                args,
            )
        ]

    def settled_tasks(
        self, job: str, final: Collection[str], after: int, limit: int, max_bytes: int
    ) -> list[StoredTask]:
        """A job's tasks in `final` states, in the order they settled, with their results:
        from the `after`-th, at most `limit`, and no more once the outputs read (those kept
        in their rows) pass `max_bytes` (the first is read whatever its size)."""
        marks = ", ".join("?" * len(final))
        rows = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM {_TASK_FROM} WHERE t.job = ? AND t.state IN ({marks}) "
            "ORDER BY t.since, t.rowid LIMIT ? OFFSET ?",
            (job, *final, limit, after),
        )
        page: list[StoredTask] = []
        size = 0
        for row in rows:  # one at a time: the rows past the page are never read
            if page and size > max_bytes:
                break
            page.append(_stored_task(row))
            size += len(row[7] or b"")
        rows.close()
        return page
