"""A node's durable state in one SQLite file: its jobs, tasks and their transitions, results, the
peers it paid and where to reach them, and the ledger of signed commitments and receipts.

Owns: the schema and its version, writing `journal` entries, reading back what a restarted
scheduler resumes, and the ledger's views (what each job and each peer cost or earned).
Promises: a batch of entries is written in one transaction, all or nothing, and once `write`
returns it survives the process being killed (WAL, synchronous=NORMAL: not a power cut); a file
that is not a p2psched store, or is a newer one, is refused with `StoreError`, never altered;
`verify_ledger` trusts no column it can re-derive: every entry is re-checked from its signed
document and the public key that signed it.

The node's own public key (the signer of the commitments it pays under and the receipts it
issues) is kept once, in `meta`, set by `Store.open(path, own_public_key=...)`; those ledger
rows have a NULL `signer_public_key`. A store is used by one caller at a time (the node's
shell, from one thread at a time): it may be handed to a worker thread, but not shared by two.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from p2psched.identity import node_id_of
from p2psched.scheduler.journal import (
    Accepted,
    Charged,
    Committed,
    Entry,
    Issued,
    JobFinished,
    JobOpened,
    Moved,
)
from p2psched.wire.codec import DecodeError, decode, encode
from p2psched.wire.deal import Commitment, Receipt
from p2psched.wire.schema import SchemaError

SCHEMA_VERSION = 1
# "p2ps": marks the file as ours in the SQLite header, so another program's database (or an
# empty one it created) is told apart from a store before anything is written to it.
APPLICATION_ID = 0x70327073
# A commitment names up to 4096 task ids of up to 160 characters: well under this.
_MAX_DOCUMENT_BYTES = 4 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- mtr, budget: NULL means unlimited (math.inf); deadline: NULL means none.
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    mtr REAL,
    budget REAL,
    deadline REAL,
    finished_at REAL
);
-- A task's current state; its history is in transitions. Keyed by job too: a task id is only
-- unique within its job.
CREATE TABLE IF NOT EXISTS tasks (
    job TEXT NOT NULL REFERENCES jobs(id),
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    worker BLOB,
    price REAL NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT,
    since REAL NOT NULL,
    PRIMARY KEY (job, id)
);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL REFERENCES jobs(id),
    task TEXT NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS results (
    job TEXT NOT NULL REFERENCES jobs(id),
    task TEXT NOT NULL,
    output BLOB NOT NULL,
    receipt BLOB NOT NULL,
    worker_public_key BLOB NOT NULL,
    PRIMARY KEY (job, task)
);
CREATE TABLE IF NOT EXISTS peers (
    worker BLOB PRIMARY KEY,
    addresses TEXT NOT NULL,
    last_seen REAL NOT NULL
);
-- No reference to jobs: a worker's earned entries name other schedulers' jobs.
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    role TEXT NOT NULL CHECK (role IN ('paid', 'earned')),
    kind TEXT NOT NULL CHECK (kind IN ('commitment', 'receipt')),
    job TEXT NOT NULL,
    task TEXT,
    peer BLOB NOT NULL,
    amount REAL NOT NULL,
    ok INTEGER,
    document BLOB NOT NULL,
    signer_public_key BLOB,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_by_job ON ledger (job, role, kind);
"""

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
    "INSERT INTO ledger (role, kind, job, task, peer, amount, ok, document, signer_public_key, at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# An empty address list (a worker reached some other way) never erases addresses that worked.
_UPSERT_PEER = (
    "INSERT INTO peers (worker, addresses, last_seen) VALUES (?, ?, ?) "
    "ON CONFLICT (worker) DO UPDATE SET addresses = excluded.addresses, "
    "last_seen = excluded.last_seen WHERE excluded.last_seen >= peers.last_seen"
)
_INSERT_RESULT = (
    "INSERT INTO results (job, task, output, receipt, worker_public_key) VALUES (?, ?, ?, ?, ?)"
)
_FINISH_JOB = "UPDATE jobs SET finished_at = ? WHERE id = ?"


class StoreError(Exception):
    """A store file problem the user can fix; the message names the file and the fix."""


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
    output: bytes | None = None  # MessagePack, as the receipt hashes it
    receipt: Receipt | None = None
    worker_public_key: bytes | None = None


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


def _json_value(v: Any) -> Any:
    """What YAML reads that JSON has no type for: dates and times, as ISO 8601 text (which
    the job spec takes back the same way: a deadline given as a timestamp, say)."""
    if isinstance(v, datetime | date):
        return v.isoformat()
    raise TypeError(f"a job spec value of type {type(v).__name__} cannot be stored: {v!r}")


def _limit_in(v: float) -> float | None:
    return None if math.isinf(v) else v


def _limit_out(v: float | None) -> float:
    return math.inf if v is None else v


class Store:
    """A node's SQLite store. Open with `Store.open`; close with `close()` or a `with` block."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        row = connection.execute("SELECT value FROM meta WHERE key = 'own_public_key'").fetchone()
        self.own_public_key: bytes | None = row[0] if row else None

    @classmethod
    def open(cls, path: Path, own_public_key: bytes | None = None) -> Store:
        """Open the store at `path`, creating it (mode 0600) if it does not exist.

        `own_public_key` is the node's identity key: recorded on first use, and checked on
        every later open, so a store is never credited to a different identity by mistake.
        """
        path = Path(path)
        try:
            # O_EXCL + 0600: results and the ledger are nobody else's business, not even
            # between SQLite creating the file and a chmod.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as e:
            raise StoreError(
                f"{path} cannot be created ({e.strerror}); check that its directory exists "
                "and is writable."
            ) from None
        # Transactions are explicit (see `_transaction`), hence isolation_level=None.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            _prepare(db, path)
            store = cls(path, db)
            if own_public_key is not None:
                store._set_identity(own_public_key)
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _set_identity(self, public_key: bytes) -> None:
        if self.own_public_key == public_key:
            return
        if self.own_public_key is not None:
            raise StoreError(
                f"{self.path} belongs to the node whose id is "
                f"{node_id_of(self.own_public_key).hex()}, not to this identity "
                f"({node_id_of(public_key).hex()}); use the data directory this store came "
                "with, or move the store away to start a new one."
            )
        with self._transaction():
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('own_public_key', ?)", (public_key,)
            )
        self.own_public_key = public_key

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE: take the write lock up front, so a batch never fails halfway on a lock.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------

    def write(self, entries: Iterable[Entry]) -> None:
        """Make `entries` durable, in one transaction.

        Entries of one type keep their order; the types are written jobs first and finished
        jobs last, so a batch may open a job and move its tasks. An entry naming a job this
        store never opened (a bug in the caller: `JobOpened` comes first) refuses the whole
        batch with ValueError, leaving the store as it was; so does a task's result charged
        twice. A job opened again (a resumed scheduler announcing it) keeps what was stored.
        """
        jobs: list[tuple[Any, ...]] = []
        transitions: list[tuple[Any, ...]] = []
        # A task's row takes only its last move in the batch: one upsert per task, not per move.
        tasks: dict[tuple[str, str], tuple[Any, ...]] = {}
        ledger: list[tuple[Any, ...]] = []
        peers: list[tuple[Any, ...]] = []
        results: list[tuple[Any, ...]] = []
        finished: list[tuple[Any, ...]] = []
        for e in entries:
            # Moved is most of the traffic: tested first.
            if type(e) is Moved:
                transitions.append((e.task, e.job, e.old, e.new, e.at, e.reason))
                tasks[e.job, e.task] = (
                    e.task, e.job, e.new, e.worker, e.price, e.attempts, e.reason, e.at
                )  # fmt: skip
            elif type(e) is Charged:
                r = e.receipt
                document = encode(r.to_wire())
                results.append((r.job, r.task, e.output, document, e.worker_public_key))
                ledger.append(
                    _receipt_row("paid", r, r.worker, document, e.worker_public_key, e.at)
                )
            elif type(e) is Committed:
                c = e.commitment
                ledger.append(_commitment_row("paid", c, c.worker, None, e.at))
                if e.worker_addresses:
                    peers.append((c.worker, json.dumps(list(e.worker_addresses)), e.at))
            elif type(e) is JobOpened:
                jobs.append(
                    (
                        e.job,
                        e.name,
                        json.dumps(e.spec, default=_json_value),
                        e.submitted_at,
                        _limit_in(e.mtr),
                        _limit_in(e.budget),
                        e.deadline,
                    )
                )
            elif type(e) is JobFinished:
                finished.append((e.at, e.job))
            elif type(e) is Accepted:
                c = e.commitment
                ledger.append(
                    _commitment_row("earned", c, c.scheduler, e.scheduler_public_key, e.at)
                )
            elif type(e) is Issued:
                r = e.receipt
                ledger.append(_receipt_row("earned", r, r.scheduler, None, None, e.at))
            else:
                raise TypeError(f"not a journal entry: {e!r}")
        if not (jobs or transitions or ledger or results or finished):
            return
        try:
            with self._transaction() as db:
                if jobs:
                    db.executemany(_INSERT_JOB, jobs)
                if transitions:
                    db.executemany(_INSERT_TRANSITION, transitions)
                    db.executemany(_UPSERT_TASK, tasks.values())
                if results:
                    db.executemany(_INSERT_RESULT, results)
                if ledger:
                    db.executemany(_INSERT_LEDGER, ledger)
                if peers:
                    db.executemany(_UPSERT_PEER, peers)
                if finished:
                    if db.executemany(_FINISH_JOB, finished).rowcount != len(finished):
                        raise sqlite3.IntegrityError("JobFinished for an unknown job")
        except sqlite3.IntegrityError as e:
            raise ValueError(self._refusal(jobs, transitions, results, finished, e)) from e

    def _refusal(
        self,
        jobs: list[tuple[Any, ...]],
        transitions: list[tuple[Any, ...]],
        results: list[tuple[Any, ...]],
        finished: list[tuple[Any, ...]],
        error: sqlite3.IntegrityError,
    ) -> str:
        """Why a batch was refused, found after the rollback (the happy path pays nothing)."""
        named = {t[1] for t in transitions} | {r[0] for r in results} | {f[1] for f in finished}
        known = {row[0] for row in self._db.execute("SELECT id FROM jobs")}
        unknown = sorted(named - known - {j[0] for j in jobs})
        if unknown:
            return (
                f"batch not written to {self.path}: its entries name jobs with no JobOpened "
                f"before them: {', '.join(unknown)}"
            )
        charged = Counter((r[0], r[1]) for r in results)
        twice = {k for k, n in charged.items() if n > 1} | {
            (row[0], row[1])
            for row in self._db.execute("SELECT job, task FROM results")
            if (row[0], row[1]) in charged
        }
        if twice:
            return f"batch not written to {self.path}: a task's result is charged twice: " + (
                ", ".join(sorted(f"{job}/{task}" for job, task in twice))
            )
        return f"batch not written to {self.path}: {error}"

    # -- reading back ----------------------------------------------------------------------

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
                mtr=_limit_out(row[4]),
                budget=_limit_out(row[5]),
                deadline=row[6],
            )
        for row in self._db.execute(
            "SELECT t.job, t.id, t.state, t.worker, t.price, t.attempts, t.error, t.since, "
            "r.output, r.receipt, r.worker_public_key "
            "FROM tasks t JOIN jobs j ON j.id = t.job "
            "LEFT JOIN results r ON r.job = t.job AND r.task = t.id "
            "WHERE j.finished_at IS NULL"
        ):
            receipt = None if row[9] is None else _document(Receipt, row[9])
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
            )
        return list(jobs.values())

    def task(self, job: str, task: str) -> tuple[float, StoredTask] | None:
        """(its job's submission time, the task as stored, with its result if any); None
        if the store never had it. For tasks of jobs no longer kept in memory."""
        row = self._db.execute(
            "SELECT j.submitted_at, t.state, t.worker, t.price, t.attempts, t.error, t.since, "
            "r.output FROM tasks t JOIN jobs j ON j.id = t.job "
            "LEFT JOIN results r ON r.job = t.job AND r.task = t.id "
            "WHERE t.job = ? AND t.id = ?",
            (job, task),
        ).fetchone()
        if row is None:
            return None
        stored = StoredTask(task, row[1], row[2], row[3], row[4], row[5], row[6], output=row[7])
        return row[0], stored

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

    # -- the ledger ------------------------------------------------------------------------

    def ledger_summary(self) -> dict[str, Any]:
        """Money by job (what this node committed and spent on its own jobs) and by peer.

        {"jobs": [{"job", "committed", "spent", "tasks_paid"}], "peers": [{"peer" (hex node id),
        "spent" (we paid them), "earned" (they paid us)}], "spent": total, "earned": total}.
        `committed` adds up every commitment made, including money released when a task was
        retried elsewhere: it is what was held, not what is still held.
        """
        jobs = [
            {"job": r[0], "committed": r[1], "spent": r[2], "tasks_paid": r[3]}
            for r in self._db.execute(
                "SELECT job, "
                "TOTAL(CASE WHEN kind = 'commitment' THEN amount END), "
                "TOTAL(CASE WHEN kind = 'receipt' AND ok THEN amount END), "
                "COUNT(CASE WHEN kind = 'receipt' AND ok THEN 1 END) "
                "FROM ledger WHERE role = 'paid' GROUP BY job ORDER BY job"
            )
        ]
        peers = [
            {"peer": r[0].hex(), "spent": r[1], "earned": r[2]}
            for r in self._db.execute(
                "SELECT peer, "
                "TOTAL(CASE WHEN role = 'paid' AND ok THEN amount END), "
                "TOTAL(CASE WHEN role = 'earned' AND ok THEN amount END) "
                "FROM ledger WHERE kind = 'receipt' GROUP BY peer ORDER BY peer"
            )
        ]
        return {
            "jobs": jobs,
            "peers": peers,
            "spent": math.fsum(p["spent"] for p in peers),
            "earned": math.fsum(p["earned"] for p in peers),
        }

    def verify_ledger(self) -> list[str]:
        """Every problem found by re-checking each ledger entry from its document alone: the
        signature, the signer's key against the id the document names, the columns against the
        signed fields, and each receipt's charge against the commitment for its task. Empty when
        all is well."""
        own_id = None if self.own_public_key is None else node_id_of(self.own_public_key)
        problems: list[str] = []
        # (role, job, task, worker, scheduler) -> the prices committed for that task
        committed: dict[tuple[str, str, str, bytes, bytes], list[float]] = {}
        receipts: list[tuple[str, str, Receipt]] = []
        for row in self._db.execute(
            "SELECT seq, role, kind, job, task, peer, amount, ok, document, signer_public_key "
            "FROM ledger ORDER BY seq"
        ):
            seq, role, kind, job, task, peer, amount, ok, document, signer_key = row
            name = f"ledger entry {seq} ({role} {kind}, job {job!r})"
            try:
                doc: Commitment | Receipt = (
                    _document(Commitment, document)
                    if kind == "commitment"
                    else _document(Receipt, document)
                )
            except (DecodeError, SchemaError, TypeError) as e:
                problems.append(f"{name}: the document does not parse ({e})")
                continue
            # The node signs its own commitments (paying) and receipts (earning).
            own_signed = (role, kind) in (("paid", "commitment"), ("earned", "receipt"))
            if own_signed:
                if signer_key is not None:
                    problems.append(f"{name}: signed by this node, yet names a signer key")
                signer_key = self.own_public_key
            if signer_key is None:
                problems.append(f"{name}: no public key to check the signature with")
            elif not doc.verify(signer_key):
                if node_id_of(signer_key) != doc.signer():
                    problems.append(f"{name}: the signer's key is not the key of the id it names")
                else:
                    problems.append(f"{name}: the signature does not verify")
            # Whom the document is with, seen from this node.
            if isinstance(doc, Commitment):
                ours, theirs = (
                    (doc.scheduler, doc.worker) if role == "paid" else (doc.worker, doc.scheduler)
                )
                expected = doc.price * len(doc.tasks)
                signed_task: str | None = None
                signed_ok: bool | None = None
                for t in doc.tasks:
                    committed.setdefault((role, doc.job, t, doc.worker, doc.scheduler), []).append(
                        doc.price
                    )
            else:
                ours, theirs = (
                    (doc.scheduler, doc.worker) if role == "paid" else (doc.worker, doc.scheduler)
                )
                expected = doc.price if doc.ok else 0.0
                signed_task, signed_ok = doc.task, doc.ok
                receipts.append((name, role, doc))
            if own_id is not None and ours != own_id:
                problems.append(f"{name}: the document is not this node's deal")
            mismatched = [
                column
                for column, stored, signed in (
                    ("job", job, doc.job),
                    ("peer", peer, theirs),
                    ("amount", amount, expected),
                    ("task", task, signed_task),
                    ("ok", None if ok is None else bool(ok), signed_ok),
                )
                if stored != signed
            ]
            if mismatched:
                problems.append(
                    f"{name}: stored columns differ from the signed document: "
                    + ", ".join(mismatched)
                )
        for name, role, r in receipts:
            prices = committed.get((role, r.job, r.task, r.worker, r.scheduler))
            if prices is None:
                problems.append(f"{name}: no commitment names task {r.task!r}")
            elif r.ok and r.price > max(prices):
                problems.append(
                    f"{name}: charges {r.price} for task {r.task!r}, over the {max(prices)} "
                    "committed"
                )
        return problems


def _commitment_row(
    role: str, c: Commitment, peer: bytes, signer_key: bytes | None, at: float
) -> tuple[Any, ...]:
    return (
        role, "commitment", c.job, None, peer, c.price * len(c.tasks), None,
        encode(c.to_wire()), signer_key, at,
    )  # fmt: skip


def _receipt_row(
    role: str, r: Receipt, peer: bytes, document: bytes | None, signer_key: bytes | None, at: float
) -> tuple[Any, ...]:
    return (
        role, "receipt", r.job, r.task, peer, r.price if r.ok else 0.0, r.ok,
        document if document is not None else encode(r.to_wire()), signer_key, at,
    )  # fmt: skip


_Doc = TypeVar("_Doc", Commitment, Receipt)


def _document(cls: type[_Doc], blob: bytes) -> _Doc:
    doc: _Doc = cls.from_wire(decode(blob, _MAX_DOCUMENT_BYTES), cls.__name__.lower())
    return doc


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Check the file is a store this code can read, create the schema in a new one."""
    try:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        has_tables = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] > 0
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"{path} is not a p2psched store (SQLite says: {e}); move it away (a new store is "
            "created in its place) or point --data-dir at the right directory."
        ) from None
    if application_id != APPLICATION_ID and (application_id != 0 or has_tables):
        raise StoreError(
            f"{path} is an SQLite database of some other program, not a p2psched store; move it "
            "away (a new store is created in its place) or point --data-dir elsewhere."
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer p2psched (store schema {version}; this one reads up "
            f"to {SCHEMA_VERSION}); upgrade p2psched, or use another --data-dir."
        )
    # WAL: a writer never blocks readers, and a commit is one append. synchronous=NORMAL in WAL
    # survives a killed process (not a power cut), which is what a node needs.
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    if application_id == APPLICATION_ID:
        return
    # One script, one transaction; IF NOT EXISTS because another process may have created the
    # schema while this one waited for the lock.
    try:
        db.executescript(
            f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id = {APPLICATION_ID}; "
            f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        )
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
