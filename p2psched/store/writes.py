"""Journal entries turned into rows, and the rows into one batch of SQL.

Owns: which table each entry type lands in and with what columns, the order tables are written
in (jobs first, finished jobs last), which results are too large for their row (`spooled`), and
why SQLite refused a batch, told in the journal's terms.
Promises: a task's row takes only its last move in a batch (one upsert per task, not per move),
a worker's reputation row only its last record;
an empty address list never erases addresses that worked; a result over `spool_over` bytes is
named in its row by the file it goes to (its SHA-256, as its receipt says) and left out of
it; nothing here commits or writes files: the caller holds the transaction, and writes
`spooled` before it.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psched.store.journal import (
    VERDICTS,
    Accepted,
    Charged,
    Committed,
    Entry,
    Forgotten,
    Issued,
    JobFinished,
    JobOpened,
    JobResumed,
    Judged,
    Moved,
    Reputation,
)
from p2psched.store.schema import json_value, limit_in
from p2psched.wire.codec import encode
from p2psched.wire.deal import Commitment, Receipt, packed_hash

_INSERT_JOB = (
    "INSERT INTO jobs (id, name, spec, submitted_at, mtr, budget, deadline) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_INSERT_TRANSITION = (
    "INSERT INTO transitions (task, job, old, new, at, reason) VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_TASK = (
    "INSERT INTO tasks (id, job, state, worker, price, attempts, error, since) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job, id) DO UPDATE SET "
    "state = excluded.state, worker = excluded.worker, price = excluded.price, "
    "attempts = excluded.attempts, error = excluded.error, since = excluded.since"
)
_INSERT_LEDGER = (
    "INSERT INTO ledger "
    "(role, kind, job, task, peer, amount, ok, document, signer_public_key, at, verdict) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A verdict on a receipt charged pending (a later verdict, on one judged already, replaces it).
_JUDGE = (
    "UPDATE ledger SET verdict = ? WHERE role = 'paid' AND kind = 'receipt' AND job = ? "
    "AND task = ? AND verdict IS NOT NULL"
)
_UPSERT_REPUTATION = (
    "INSERT OR REPLACE INTO reputation (worker, succeeded, failed, stalls, verified, disputed, "
    "clean, duration_mismatches, challenges_passed, challenges_failed, capacity, strikes, "
    "challenge_strikes, skip_until, skip_reason, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FORGET_REPUTATION = "DELETE FROM reputation WHERE worker = ?"
# An empty address list (a worker reached some other way) never erases addresses that worked.
_UPSERT_PEER = (
    "INSERT INTO peers (worker, addresses, last_seen) VALUES (?, ?, ?) "
    "ON CONFLICT (worker) DO UPDATE SET addresses = excluded.addresses, "
    "last_seen = excluded.last_seen WHERE excluded.last_seen >= peers.last_seen"
)
_INSERT_RESULT = (
    "INSERT INTO results (job, task, output, receipt, worker_public_key, output_file) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_FINISH_JOB = "UPDATE jobs SET finished_at = ? WHERE id = ?"
_RESUME_JOB = "UPDATE jobs SET resumed_at = ? WHERE id = ?"

Row = tuple[Any, ...]


@dataclass(slots=True)
class Batch:
    """A batch of entries as rows, table by table; and the results kept in files instead."""

    spool_over: int  # bytes of a result kept in its row, at most
    jobs: list[Row] = field(default_factory=list)
    transitions: list[Row] = field(default_factory=list)
    tasks: dict[tuple[str, str], Row] = field(default_factory=dict)  # (job, task) -> its row
    ledger: list[Row] = field(default_factory=list)
    peers: list[Row] = field(default_factory=list)
    results: list[Row] = field(default_factory=list)
    judged: list[Row] = field(default_factory=list)
    reputation: dict[bytes, Row | None] = field(default_factory=dict)  # None: forgotten
    resumed: list[Row] = field(default_factory=list)
    finished: list[Row] = field(default_factory=list)
    spooled: dict[str, bytes] = field(default_factory=dict)  # file name -> the output

    def __bool__(self) -> bool:
        # peers come only with a ledger row (a commitment), tasks only with a transition.
        return bool(
            self.jobs
            or self.transitions
            or self.ledger
            or self.results
            or self.judged
            or self.reputation
            or self.resumed
            or self.finished
        )

    def add(self, e: Entry) -> None:
        # Moved is most of the traffic: tested first.
        if type(e) is Moved:
            self.transitions.append((e.task, e.job, e.old, e.new, e.at, e.reason))
            self.tasks[e.job, e.task] = (
                e.task, e.job, e.new, e.worker, e.price, e.attempts, e.error, e.at
            )  # fmt: skip
        elif type(e) is Charged:
            r = e.receipt
            document = encode(r.to_wire())
            if e.keep:
                output, name = e.output, None
                if len(output) > self.spool_over:
                    name = packed_hash(output).hex()  # as its receipt says; one file per output
                    self.spooled[name], output = output, b""
                self.results.append((r.job, r.task, output, document, e.worker_public_key, name))
            if e.verdict not in (None, "pending"):
                raise TypeError(f"Charged.verdict is None or 'pending', not {e.verdict!r}")
            self.ledger.append(
                _receipt_row("paid", r, r.worker, document, e.worker_public_key, e.at, e.verdict)
            )
        elif type(e) is Reputation:
            self.reputation[e.worker] = (
                e.worker, e.succeeded, e.failed, e.stalls, e.verified, e.disputed, e.clean,
                e.duration_mismatches, e.challenges_passed, e.challenges_failed, e.capacity,
                e.strikes, e.challenge_strikes, e.skip_until, e.skip_reason, e.updated_at,
            )  # fmt: skip
        elif type(e) is Judged:
            if e.verdict not in VERDICTS:
                raise TypeError(f"Judged.verdict is one of {VERDICTS}, not {e.verdict!r}")
            self.judged.append((e.verdict, e.job, e.task))
        elif type(e) is Forgotten:
            self.reputation[e.worker] = None
        elif type(e) is Committed:
            c = e.commitment
            self.ledger.append(_commitment_row("paid", c, c.worker, None, e.at))
            if e.worker_addresses:
                self.peers.append((c.worker, json.dumps(list(e.worker_addresses)), e.at))
        elif type(e) is JobOpened:
            self.jobs.append(
                (
                    e.job,
                    e.name,
                    json.dumps(e.spec, default=json_value),
                    e.submitted_at,
                    limit_in(e.mtr),
                    limit_in(e.budget),
                    e.deadline,
                )
            )
        elif type(e) is JobFinished:
            self.finished.append((e.at, e.job))
        elif type(e) is JobResumed:
            self.resumed.append((e.at, e.job))
        elif type(e) is Accepted:
            c = e.commitment
            self.ledger.append(
                _commitment_row("earned", c, c.scheduler, e.scheduler_public_key, e.at)
            )
        elif type(e) is Issued:
            r = e.receipt
            self.ledger.append(_receipt_row("earned", r, r.scheduler, None, None, e.at))
        else:
            raise TypeError(f"not a journal entry: {e!r}")

    def apply(self, db: sqlite3.Connection) -> None:
        """Write the rows, jobs first and finished jobs last, so a batch may open a job and
        move its tasks. Raises sqlite3.IntegrityError for an entry that names an unknown job."""
        if self.jobs:
            db.executemany(_INSERT_JOB, self.jobs)
        if self.transitions:
            db.executemany(_INSERT_TRANSITION, self.transitions)
            db.executemany(_UPSERT_TASK, self.tasks.values())
        if self.results:
            db.executemany(_INSERT_RESULT, self.results)
        if self.ledger:
            db.executemany(_INSERT_LEDGER, self.ledger)
        if self.peers:
            db.executemany(_UPSERT_PEER, self.peers)
        for row in self.judged:  # (one by one: a verdict on no pending receipt is refused)
            if db.execute(_JUDGE, row).rowcount == 0:
                raise sqlite3.IntegrityError("Judged names no receipt charged pending")
        if self.reputation:
            forgotten = [(w,) for w, row in self.reputation.items() if row is None]
            db.executemany(_FORGET_REPUTATION, forgotten)
            db.executemany(_UPSERT_REPUTATION, [r for r in self.reputation.values() if r])
        if self.resumed:
            if db.executemany(_RESUME_JOB, self.resumed).rowcount != len(self.resumed):
                raise sqlite3.IntegrityError("JobResumed for an unknown job")
        if self.finished:
            if db.executemany(_FINISH_JOB, self.finished).rowcount != len(self.finished):
                raise sqlite3.IntegrityError("JobFinished for an unknown job")

    def refusal(self, db: sqlite3.Connection, path: Path, error: sqlite3.IntegrityError) -> str:
        """Why the batch was refused, found after the rollback (the happy path pays nothing)."""
        named = (
            {t[1] for t in self.transitions}
            | {r[0] for r in self.results}
            | {f[1] for f in self.finished}
            | {r[1] for r in self.resumed}
        )
        known = {row[0] for row in db.execute("SELECT id FROM jobs")}
        unknown = sorted(named - known - {j[0] for j in self.jobs})
        if unknown:
            return (
                f"batch not written to {path}: its entries name jobs with no JobOpened "
                f"before them: {', '.join(unknown)}"
            )
        if self.judged:
            pending = {
                (row[0], row[1])
                for row in db.execute(
                    "SELECT job, task FROM ledger WHERE role = 'paid' AND kind = 'receipt' "
                    "AND verdict IS NOT NULL"
                )
            } | {(r[2], r[3]) for r in self.ledger if r[0] == "paid" and r[10] is not None}
            unjudged = sorted(f"{j}/{t}" for _, j, t in self.judged if (j, t) not in pending)
            if unjudged:
                return (
                    f"batch not written to {path}: a verdict names no receipt charged pending: "
                    + ", ".join(unjudged)
                )
        charged = Counter((r[0], r[1]) for r in self.results)
        twice = {k for k, n in charged.items() if n > 1} | {
            (row[0], row[1])
            for row in db.execute("SELECT job, task FROM results")
            if (row[0], row[1]) in charged
        }
        if twice:
            return f"batch not written to {path}: a task's result is charged twice: " + (
                ", ".join(sorted(f"{job}/{task}" for job, task in twice))
            )
        return f"batch not written to {path}: {error}"


def batch_of(entries: Iterable[Entry], spool_over: int) -> Batch:
    batch = Batch(spool_over)
    for e in entries:
        batch.add(e)
    return batch


def _commitment_row(
    role: str, c: Commitment, peer: bytes, signer_key: bytes | None, at: float
) -> Row:
    return (
        role, "commitment", c.job, None, peer, c.price * len(c.tasks), None,
        encode(c.to_wire()), signer_key, at, None,
    )  # fmt: skip


def _receipt_row(
    role: str,
    r: Receipt,
    peer: bytes,
    document: bytes | None,
    signer_key: bytes | None,
    at: float,
    verdict: str | None = None,
) -> Row:
    return (
        role, "receipt", r.job, r.task, peer, r.price if r.ok else 0.0, r.ok,
        document if document is not None else encode(r.to_wire()), signer_key, at, verdict,
    )  # fmt: skip
