"""The store's tables, the migrations that build them, and how values are kept in their columns.

Owns: `MIGRATIONS` (index n takes a store from schema version n to n + 1; the last one's result
is the current schema), `prepare`, which checks that a file is a store this code can read and
migrates it, and the column encodings (limits, job specs, signed documents).
Promises: each migration runs in one transaction together with the version it leads to, so a
store is always at some version, never between two; a file that is not a p2psched store, or is
a newer one, is refused with `StoreError` and left untouched.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

from p2psched.wire.codec import decode
from p2psched.wire.deal import Commitment, Receipt

# "p2ps": marks the file as ours in the SQLite header, so another program's database (or an
# empty one it created) is told apart from a store before anything is written to it.
APPLICATION_ID = 0x70327073
# A commitment names up to 4096 task ids of up to 160 characters: well under this.
MAX_DOCUMENT_BYTES = 4 << 20


class StoreError(Exception):
    """A store file problem the user can fix; the message names the file and the fix."""


# A migration runs inside the transaction `prepare` opened, so it uses `execute` only:
# `executescript` would commit that transaction first.
Migration = Callable[[sqlite3.Connection], None]


def sql_script(script: str) -> Migration:
    """The migration that runs `script`'s statements in order."""
    statements = list(_statements(script))

    def run(db: sqlite3.Connection) -> None:
        for statement in statements:
            db.execute(statement)

    return run


def _statements(script: str) -> Iterator[str]:
    """`script` cut into whole statements (a ';' in a comment or a string cuts nothing)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip(" \n;"):
        raise ValueError(f"an incomplete SQL statement ends the script: {pending!r}")


# Version 1: the schema as p2psched first shipped it.
_SCHEMA_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- mtr, budget: NULL means unlimited (math.inf); deadline: NULL means none.
CREATE TABLE jobs (
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
CREATE TABLE tasks (
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
CREATE TABLE transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL REFERENCES jobs(id),
    task TEXT NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT
);
CREATE TABLE results (
    job TEXT NOT NULL REFERENCES jobs(id),
    task TEXT NOT NULL,
    output BLOB NOT NULL,
    receipt BLOB NOT NULL,
    worker_public_key BLOB NOT NULL,
    PRIMARY KEY (job, task)
);
CREATE TABLE peers (
    worker BLOB PRIMARY KEY,
    addresses TEXT NOT NULL,
    last_seen REAL NOT NULL
);
-- No reference to jobs: a worker's earned entries name other schedulers' jobs.
CREATE TABLE ledger (
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
CREATE INDEX ledger_by_job ON ledger (job, role, kind);
"""

# Version 2: a result too large to keep in its row (see `Store`'s `spool_over`) is kept in a
# file of the store's outputs folder, named here; its row's `output` is then empty.
_SCHEMA_V2 = "ALTER TABLE results ADD COLUMN output_file TEXT"

# Version 3: what the node shows of jobs it no longer keeps in memory (run before it restarted,
# or forgotten to bound its memory) comes from here: when a restarted node took a job up again
# (NULL: it ran in one go), and the newest jobs found without reading them all.
_SCHEMA_V3 = """
ALTER TABLE jobs ADD COLUMN resumed_at REAL;
CREATE INDEX jobs_by_submission ON jobs (submitted_at);
"""

# Version 4: what checking workers' results found. A paid receipt's `verdict`: NULL (a plain
# receipt, spent), 'pending' (its result awaits verification: not spent yet), 'agreed' (spent),
# 'disputed' or 'unsettled' (never spent). `reputation`: each worker's record as this node's
# scheduler keeps it across restarts (see `journal.Reputation`), at most as many rows as it
# keeps records in memory.
_SCHEMA_V4 = """
ALTER TABLE ledger ADD COLUMN verdict TEXT
    CHECK (verdict IN ('pending', 'agreed', 'disputed', 'unsettled'));
CREATE TABLE reputation (
    worker BLOB PRIMARY KEY,
    succeeded INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    stalls INTEGER NOT NULL,
    verified INTEGER NOT NULL,
    disputed INTEGER NOT NULL,
    clean INTEGER NOT NULL,
    duration_mismatches INTEGER NOT NULL,
    challenges_passed INTEGER NOT NULL,
    challenges_failed INTEGER NOT NULL,
    capacity TEXT NOT NULL CHECK (capacity IN ('passed', 'failed', 'unknown')),
    strikes INTEGER NOT NULL,
    challenge_strikes INTEGER NOT NULL,
    skip_until REAL,
    skip_reason TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX reputation_by_update ON reputation (updated_at);
"""

# Append to change the schema; never edit a migration that has shipped: stores out there
# are at its version already.
MIGRATIONS: tuple[Migration, ...] = (
    sql_script(_SCHEMA_V1),
    sql_script(_SCHEMA_V2),
    sql_script(_SCHEMA_V3),
    sql_script(_SCHEMA_V4),
)
SCHEMA_VERSION = len(MIGRATIONS)


def prepare(db: sqlite3.Connection, path: Path) -> None:
    """Check the file is a store this code can read, and bring it to the current schema (a
    new store goes through every migration)."""
    latest = len(MIGRATIONS)
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
    if version > latest:
        raise StoreError(
            f"{path} was written by a newer p2psched (store schema {version}; this one reads up "
            f"to {latest}); upgrade p2psched, or use another --data-dir."
        )
    # WAL: a writer never blocks readers, and a commit is one append. synchronous=NORMAL in WAL
    # survives a killed process (not a power cut), which is what a node needs.
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    # An empty file is version 0 whatever its header says: nothing of ours is in it yet.
    for step in range(version if application_id == APPLICATION_ID else 0, latest):
        _migrate(db, path, step)


def _migrate(db: sqlite3.Connection, path: Path, version: int) -> None:
    """Run the migration from `version` to the next, unless another process opening the same
    store did while this one waited for the write lock."""
    try:
        with transaction(db):
            ours = db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            if not ours or db.execute("PRAGMA user_version").fetchone()[0] == version:
                MIGRATIONS[version](db)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {version + 1}")
    except sqlite3.OperationalError as e:
        raise StoreError(
            f"{path} could not be migrated from store schema {version} to {version + 1} "
            f"(SQLite says: {e}); it is left at schema {version}: fix the cause and start again."
        ) from e


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """All of the block's writes or none of them."""
    # IMMEDIATE: take the write lock up front (before reading what the writes depend on), so
    # a batch never fails halfway on a lock.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# -- how values are kept in columns --------------------------------------------------------


def json_value(v: Any) -> Any:
    """What YAML reads that JSON has no type for: dates and times, as ISO 8601 text (which
    the job spec takes back the same way: a deadline given as a timestamp, say)."""
    if isinstance(v, datetime | date):
        return v.isoformat()
    raise TypeError(f"a job spec value of type {type(v).__name__} cannot be stored: {v!r}")


# A paid receipt's row counts as spent when ok and plain (no verdict) or agreed; never while its
# result awaits verification, nor once disputed or left unsettled (schema version 4).
SPENT = "ok AND (verdict IS NULL OR verdict = 'agreed')"


def limit_in(v: float) -> float | None:
    """A limit (MTR, budget) as its column keeps it: NULL for unlimited."""
    return None if math.isinf(v) else v


def limit_out(v: float | None) -> float:
    return math.inf if v is None else v


Document = TypeVar("Document", Commitment, Receipt)


def document(cls: type[Document], blob: bytes) -> Document:
    """A signed document back from its column (MessagePack, as it travelled)."""
    doc: Document = cls.from_wire(decode(blob, MAX_DOCUMENT_BYTES), cls.__name__.lower())
    return doc
