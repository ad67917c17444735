"""What the store's tests write and read: the journal entries of jobs, commitments and
receipts signed by real identities, and SQL run on a store's file from outside."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from p2psched.identity import Identity
from p2psched.store import Store, schema
from p2psched.store.journal import Charged, Committed, Entry, JobOpened, Moved, Reputation
from p2psched.wire.codec import encode
from p2psched.wire.deal import Commitment, Receipt, packed_hash

ME = Identity.generate()  # this node: schedules its own jobs and works for others
WORKER = Identity.generate()
OTHER_WORKER = Identity.generate()
SCHEDULER = Identity.generate()  # another node's scheduler, for whom this node works


def opened(job: str, mtr: float = 60.0, budget: float = 100.0) -> JobOpened:
    """A job opened: its spec, MTR, budget and deadline as the store keeps them."""
    return JobOpened(
        job=job,
        name=job.split("-")[0],
        spec={"name": job.split("-")[0], "driver": "echo", "items": [1, 2, 3]},
        submitted_at=1000.0,
        mtr=mtr,
        budget=budget,
        deadline=5000.0,
    )


def moved(
    job: str,
    task: str,
    old: str,
    new: str,
    at: float,
    *,
    reason: str | None = None,
    worker: bytes | None = None,
    price: float = 0.0,
    attempts: int = 0,
    error: str | None = None,
) -> Moved:
    """Task `task` of `job` moving from state `old` to `new` at `at` (`reason`: why it moved;
    `error`: what the task last failed with)."""
    return Moved(task, job, old, new, at, reason, worker, price, attempts, error)


def commitment(
    job: str, tasks: list[str], price: float, worker: Identity = WORKER, scheduler: Identity = ME
) -> Commitment:
    """`scheduler`'s signed commitment to pay `worker` `price` for each of `tasks`."""
    return Commitment(
        scheduler=scheduler.node_id,
        worker=worker.node_id,
        job=job,
        tasks=tasks,
        price=price,
        issued_at=1001.0,
    ).signed(scheduler)


def receipt(
    job: str,
    task: str,
    price: float,
    output: bytes,
    ok: bool = True,
    worker: Identity = WORKER,
    scheduler: Identity = ME,
) -> Receipt:
    """`worker`'s signed receipt for running `task` (`ok` or not), its result `output`."""
    return Receipt(
        worker=worker.node_id,
        scheduler=scheduler.node_id,
        job=job,
        task=task,
        ok=ok,
        result_hash=packed_hash(output),
        duration=2.5,
        price=price,
        finished_at=1010.0,
    ).signed(worker)


def charged(
    job: str,
    task: str,
    price: float,
    value: object,
    *,
    ok: bool = True,
    worker: Identity = WORKER,
    verdict: str | None = None,
) -> Charged:
    """A result paid for: `worker`'s receipt for `value`, with the value and its key
    (`verdict` "pending": not paid until judged)."""
    output = encode(value)
    return replace(
        Charged(
            receipt=receipt(job, task, price, output, ok=ok, worker=worker),
            worker_public_key=worker.public_key,
            output=output,
            at=1010.0,
        ),
        verdict=verdict,
    )


def run_to_completion(job: str, task: str, price: float, value: object) -> list[Entry]:
    """The entries of one task queued, committed, sent and completed."""
    w = WORKER.node_id
    return [
        moved(job, task, "unscheduled", "queued", 1000.0),
        moved(job, task, "queued", "negotiating", 1000.5),
        Committed(commitment(job, [task], price), ("10.0.0.7:4000",), at=1001.0),
        moved(job, task, "negotiating", "scheduled", 1001.0, worker=w, price=price, attempts=1),
        moved(job, task, "scheduled", "sent", 1001.1, worker=w, price=price, attempts=1),
        charged(job, task, price, value),
        moved(job, task, "sent", "completed", 1010.0, worker=w, price=price, attempts=1),
    ]


def honest_ledger(store: Store) -> None:
    """One task of job a-1 run to completion for 0.5: a ledger that verifies."""
    store.write(run_to_completion("a-1", "a-1-000000", 0.5, [1]))


def sql(store: Store, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the store's file from outside, as someone editing it would."""
    db = sqlite3.connect(store.path, isolation_level=None)
    try:
        return db.execute(statement, params).fetchall()
    finally:
        db.close()


def reputation(worker: bytes, at: float = 1000.0, **counts: Any) -> Reputation:
    """A worker's record as the scheduler keeps it: nothing on record but `counts` (and
    `skip_until`, `skip_reason`, `capacity` if given), updated at `at`."""
    record: dict[str, Any] = {
        "succeeded": 0, "failed": 0, "stalls": 0, "verified": 0, "disputed": 0, "clean": 0,
        "duration_mismatches": 0, "challenges_passed": 0, "challenges_failed": 0,
        "capacity": "unknown", "strikes": 0, "challenge_strikes": 0, "skip_until": None,
        "skip_reason": None,
    }  # fmt: skip
    return Reputation(worker=worker, updated_at=at, **{**record, **counts})


def older_store(path: Path, version: int, entries: list[Entry]) -> None:
    """A store at schema `version` at `path`, holding `entries` as that version kept them:
    written by this p2psched to a store aside, then copied over, the columns that version has."""
    aside = path.with_name(path.name + ".current")
    with Store.open(aside, own_public_key=ME.public_key) as current:
        current.write(entries)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for migration in schema.MIGRATIONS[:version]:
            migration(db)
        db.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("ATTACH ? AS current", (str(aside),))
        tables = db.execute(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for (table,) in tables:
            columns = ", ".join(row[1] for row in db.execute(f"PRAGMA main.table_info({table})"))
            db.execute(
                f"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM current.{table}"
            )
        db.execute("DETACH current")
    finally:
        db.close()
    for leftover in aside.parent.glob(aside.name + "*"):
        leftover.unlink()
