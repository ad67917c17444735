"""The node's SQLite store: real files, real signatures, a real SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psched.store import Store, StoreError, schema
from p2psched.store.journal import Accepted, Committed, Issued, JobFinished, JobOpened
from p2psched.store.schema import SCHEMA_VERSION
from p2psched.wire.codec import encode
from p2psched.wire.deal import packed_hash
from tests.harness.store import (
    ME,
    OTHER_WORKER,
    SCHEDULER,
    WORKER,
    charged,
    commitment,
    honest_ledger,
    moved,
    opened,
    receipt,
    run_to_completion,
    sql,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "node.db", own_public_key=ME.public_key) as s:
        yield s


def test_a_job_comes_back_with_its_task_states_result_and_receipt(store: Store) -> None:
    store.write([opened("sum-1")])
    store.write(run_to_completion("sum-1", "sum-1-000000", 0.5, {"sum": 6}))
    store.write(
        [
            moved("sum-1", "sum-1-000001", "unscheduled", "queued", 1000.0),
            moved("sum-1", "sum-1-000001", "queued", "failed", 1003.0, reason="no worker fits"),
        ]
    )

    [job] = store.unfinished_jobs()
    assert (job.job, job.name, job.submitted_at, job.mtr, job.budget, job.deadline) == (
        "sum-1",
        "sum",
        1000.0,
        60.0,
        100.0,
        5000.0,
    )
    assert job.spec == {"name": "sum", "driver": "echo", "items": [1, 2, 3]}
    done, failed = job.tasks["sum-1-000000"], job.tasks["sum-1-000001"]
    assert (done.state, done.worker, done.price, done.attempts, done.since) == (
        "completed",
        WORKER.node_id,
        0.5,
        1,
        1010.0,
    )
    assert done.output == encode({"sum": 6})
    assert done.receipt is not None and done.receipt.verify(WORKER.public_key)
    assert done.receipt.task == "sum-1-000000" and done.receipt.price == 0.5
    assert done.worker_public_key == WORKER.public_key
    assert (failed.state, failed.error, failed.worker, failed.output, failed.receipt) == (
        "failed",
        "no worker fits",
        None,
        None,
        None,
    )
    assert store.spent("sum-1") == 0.5
    assert store.peer_addresses(WORKER.node_id) == ("10.0.0.7:4000",)
    history = sql(
        store, "SELECT old, new FROM transitions WHERE task = 'sum-1-000000' ORDER BY seq"
    )
    assert [new for _, new in history] == [
        "queued",
        "negotiating",
        "scheduled",
        "sent",
        "completed",
    ]


def test_unlimited_mtr_and_budget_come_back_as_infinity(store: Store) -> None:
    store.write([opened("free-1", mtr=math.inf, budget=math.inf)])
    store.write([JobOpened("nodl-1", "nodl", {}, 1.0, mtr=3.0, budget=math.inf, deadline=None)])

    jobs = {j.job: j for j in store.unfinished_jobs()}
    assert jobs["free-1"].mtr == math.inf and jobs["free-1"].budget == math.inf
    assert (jobs["nodl-1"].mtr, jobs["nodl-1"].budget, jobs["nodl-1"].deadline) == (
        3.0,
        math.inf,
        None,
    )


def test_finished_jobs_are_not_resumed_but_are_listed(store: Store) -> None:
    store.write(
        [opened("a-1"), opened("b-1"), moved("a-1", "a-1-000000", "unscheduled", "queued", 1)]
    )
    store.write(
        [moved("b-1", "b-1-000000", "unscheduled", "aborted", 2), JobFinished("b-1", at=2000.0)]
    )

    assert [j.job for j in store.unfinished_jobs()] == ["a-1"]
    listing = {j.job: j for j in store.jobs()}
    assert listing["a-1"].finished_at is None and listing["a-1"].counts == {"queued": 1}
    assert listing["b-1"].finished_at == 2000.0 and listing["b-1"].counts == {"aborted": 1}
    assert len(store.jobs(limit=1)) == 1


def test_ledger_summary_adds_up_by_job_and_by_peer_for_both_roles(store: Store) -> None:
    out = encode("ok")
    store.write(
        [
            opened("a-1"),
            opened("b-1"),
            Committed(commitment("a-1", ["t0", "t1"], 2.0), ("w:1",), 1.0),
            Committed(commitment("b-1", ["t0"], 3.0, worker=OTHER_WORKER), ("o:1",), 1.0),
            charged("a-1", "t0", 2.0, "r0"),
            charged("a-1", "t1", 2.0, None, ok=False),  # failed: costs nothing
            charged("b-1", "t0", 3.0, "r", worker=OTHER_WORKER),
            # This node working for SCHEDULER: it accepted two tasks and issued one ok receipt.
            Accepted(
                commitment("x-9", ["x0", "x1"], 1.5, worker=ME, scheduler=SCHEDULER),
                SCHEDULER.public_key,
                1.0,
            ),
            Issued(receipt("x-9", "x0", 1.5, out, worker=ME, scheduler=SCHEDULER), 2.0),
            Issued(receipt("x-9", "x1", 1.5, out, ok=False, worker=ME, scheduler=SCHEDULER), 2.0),
        ]
    )

    summary = store.ledger_summary()
    assert summary["jobs"] == [
        {"job": "a-1", "committed": 4.0, "spent": 2.0, "tasks_paid": 1},
        {"job": "b-1", "committed": 3.0, "spent": 3.0, "tasks_paid": 1},
    ]
    peers = {p["peer"]: (p["spent"], p["earned"]) for p in summary["peers"]}
    assert peers == {
        WORKER.node_id.hex(): (2.0, 0.0),
        OTHER_WORKER.node_id.hex(): (3.0, 0.0),
        SCHEDULER.node_id.hex(): (0.0, 1.5),
    }
    assert (summary["spent"], summary["earned"]) == (5.0, 1.5)
    assert (store.spent("a-1"), store.spent("b-1"), store.spent("x-9")) == (2.0, 3.0, 0.0)
    assert store.verify_ledger() == []


def test_verify_ledger_names_the_entry_whose_document_was_altered(store: Store) -> None:
    store.write([opened("a-1")])
    honest_ledger(store)
    assert store.verify_ledger() == []
    [(seq, doc)] = sql(store, "SELECT seq, document FROM ledger WHERE kind = 'receipt'")
    # Flip one byte of the signature (the document's last bytes): still parses, must not verify.
    tampered = doc[:-1] + bytes([doc[-1] ^ 1])
    sql(store, "UPDATE ledger SET document = ? WHERE seq = ?", (tampered, seq))

    assert store.verify_ledger() == [
        f"ledger entry {seq} (paid receipt, job 'a-1'): the signature does not verify"
    ]


def test_verify_ledger_names_the_entry_whose_signer_key_was_swapped(store: Store) -> None:
    store.write([opened("a-1")])
    honest_ledger(store)
    sql(
        store,
        "UPDATE ledger SET signer_public_key = ? WHERE kind = 'receipt'",
        (OTHER_WORKER.public_key,),
    )

    [problem] = store.verify_ledger()
    assert "(paid receipt, job 'a-1')" in problem
    assert "the signer's key is not the key of the id it names" in problem


def test_verify_ledger_catches_columns_that_disagree_with_the_signed_document(
    store: Store,
) -> None:
    store.write([opened("a-1")])
    honest_ledger(store)
    [(seq,)] = sql(store, "SELECT seq FROM ledger WHERE kind = 'commitment'")
    sql(store, "UPDATE ledger SET amount = 99 WHERE seq = ?", (seq,))

    assert store.verify_ledger() == [
        f"ledger entry {seq} (paid commitment, job 'a-1'): "
        "stored columns differ from the signed document: amount"
    ]


def test_verify_ledger_catches_a_receipt_over_its_commitment(store: Store) -> None:
    store.write(
        [
            opened("a-1"),
            Committed(commitment("a-1", ["t0"], 1.0), (), 1.0),
            charged("a-1", "t0", 1.25, "r"),  # the worker signed more than was committed
            charged("a-1", "t9", 1.0, "r"),  # no commitment names t9
        ]
    )

    problems = store.verify_ledger()
    assert len(problems) == 2
    assert "charges 1.25 for task 't0', over the 1.0 committed" in problems[0]
    assert "no commitment names task 't9'" in problems[1]


def test_an_own_signed_entry_cannot_be_checked_without_the_own_key(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        store.write([opened("a-1"), Committed(commitment("a-1", ["t0"], 1.0), (), 1.0)])
        [problem] = store.verify_ledger()
    assert "no public key to check the signature with" in problem
    with Store.open(tmp_path / "node.db", own_public_key=ME.public_key) as store:
        assert store.verify_ledger() == []


def test_an_entry_for_a_job_never_opened_refuses_the_whole_batch(store: Store) -> None:
    store.write([opened("a-1")])
    with pytest.raises(ValueError, match="name jobs with no JobOpened before them: ghost-1"):
        store.write(
            [
                moved("a-1", "a-1-000000", "unscheduled", "queued", 1.0),
                moved("ghost-1", "ghost-1-000000", "unscheduled", "queued", 1.0),
            ]
        )
    # All or nothing: the good entry of the refused batch is not there either, and the store
    # still takes the next batch.
    assert store.unfinished_jobs()[0].tasks == {}
    store.write([moved("a-1", "a-1-000000", "unscheduled", "queued", 1.0)])
    assert store.unfinished_jobs()[0].tasks["a-1-000000"].state == "queued"


def test_a_result_charged_twice_refuses_the_batch(store: Store) -> None:
    store.write([opened("a-1"), charged("a-1", "t0", 1.0, "r")])
    with pytest.raises(ValueError, match="charged twice: a-1/t0"):
        store.write([charged("a-1", "t0", 1.0, "r")])
    assert store.spent("a-1") == 1.0


def test_an_empty_address_list_keeps_the_known_addresses(store: Store) -> None:
    store.write([opened("a-1"), Committed(commitment("a-1", ["t0"], 1.0), ("a:1", "b:2"), 5.0)])
    store.write([Committed(commitment("a-1", ["t1"], 1.0), (), 6.0)])
    assert store.peer_addresses(WORKER.node_id) == ("a:1", "b:2")
    store.write([Committed(commitment("a-1", ["t2"], 1.0), ("c:3",), 7.0)])
    assert store.peer_addresses(WORKER.node_id) == ("c:3",)
    assert store.peer_addresses(OTHER_WORKER.node_id) == ()


def test_a_12_mib_result_round_trips(store: Store) -> None:
    big = os.urandom(12 << 20)
    store.write([opened("big-1")])
    store.write(run_to_completion("big-1", "big-1-000000", 1.0, big))
    [job] = store.unfinished_jobs()
    task = job.tasks["big-1-000000"]
    assert task.output == encode(big)
    assert task.receipt is not None and task.receipt.result_hash == packed_hash(encode(big))


def test_a_reopened_store_keeps_its_data_and_its_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    with Store.open(path, own_public_key=ME.public_key) as store:
        store.write([opened("a-1")])
        honest_ledger(store)
        # SQLite's write-ahead log holds the same data: it must be as private as the store.
        assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600
    with Store.open(path, own_public_key=ME.public_key) as store:
        [job] = store.unfinished_jobs()
        assert job.tasks["a-1-000000"].state == "completed"
        assert store.spent("a-1") == 0.5
        assert store.verify_ledger() == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_store_refuses_another_identity(tmp_path: Path) -> None:
    Store.open(tmp_path / "node.db", own_public_key=ME.public_key).close()
    with pytest.raises(StoreError, match="belongs to the node whose id is " + ME.node_id.hex()):
        Store.open(tmp_path / "node.db", own_public_key=WORKER.public_key)


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    path.write_bytes(b"these are my notes, not a database\n" * 10)
    with pytest.raises(StoreError) as e:
        Store.open(path)
    assert str(path) in str(e.value) and "is not a p2psched store" in str(e.value)
    assert "move it away" in str(e.value)
    assert path.read_bytes() == b"these are my notes, not a database\n" * 10


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="of some other program, not a p2psched store"):
        Store.open(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    Store.open(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="written by a newer p2psched .* upgrade p2psched"):
        Store.open(path)


def header(path: Path) -> tuple[int, int]:
    """(application_id, user_version) of the SQLite file at `path`."""
    db = sqlite3.connect(path)
    try:
        return (
            db.execute("PRAGMA application_id").fetchone()[0],
            db.execute("PRAGMA user_version").fetchone()[0],
        )
    finally:
        db.close()


def test_a_newer_schema_is_refused_naming_the_file_and_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    Store.open(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError) as e:
        Store.open(path)
    assert str(path) in str(e.value)
    assert f"store schema {SCHEMA_VERSION + 1}; this one reads up to {SCHEMA_VERSION}" in str(
        e.value
    )
    assert header(path) == (schema.APPLICATION_ID, SCHEMA_VERSION + 1)  # left as it was


def test_a_new_store_is_created_at_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    Store.open(path).close()
    assert header(path) == (schema.APPLICATION_ID, SCHEMA_VERSION)


def test_an_empty_database_is_version_0_and_migrated_to_the_latest(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    db = sqlite3.connect(path)
    db.execute("VACUUM")  # writes the header: a real, empty SQLite database
    db.close()
    assert header(path) == (0, 0) and path.stat().st_size > 0
    with Store.open(path, own_public_key=ME.public_key) as store:
        store.write([opened("a-1")])
    assert header(path) == (schema.APPLICATION_ID, SCHEMA_VERSION)
    with Store.open(path, own_public_key=ME.public_key) as store:
        assert [j.job for j in store.unfinished_jobs()] == ["a-1"]


def _owners(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, owner FROM jobs ORDER BY id").fetchall()
    finally:
        db.close()


def test_an_older_store_is_migrated_in_order_and_keeps_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.db"
    with Store.open(path, own_public_key=ME.public_key) as store:
        store.write([opened("a-1"), opened("b-1")])
        honest_ledger(store)
    # The code grows two schema versions: each migration sees the one before it done.
    add_owner = schema.sql_script(
        "ALTER TABLE jobs ADD COLUMN owner TEXT; -- who submitted it; NULL: this node\n"
        "UPDATE jobs SET owner = 'me';"
    )
    monkeypatch.setattr(
        schema,
        "MIGRATIONS",
        (
            *schema.MIGRATIONS,
            add_owner,
            schema.sql_script("UPDATE jobs SET owner = owner || ' (' || id || ')'"),
        ),
    )
    with Store.open(path, own_public_key=ME.public_key) as store:
        assert [j.job for j in store.unfinished_jobs()] == ["a-1", "b-1"]
        assert store.spent("a-1") == 0.5 and store.verify_ledger() == []
    assert header(path) == (schema.APPLICATION_ID, SCHEMA_VERSION + 2)
    assert _owners(path) == [("a-1", "me (a-1)"), ("b-1", "me (b-1)")]
    Store.open(path).close()  # at the latest version: nothing runs again
    assert _owners(path) == [("a-1", "me (a-1)"), ("b-1", "me (b-1)")]


def test_a_failed_migration_leaves_the_store_at_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.db"
    with Store.open(path) as store:
        store.write([opened("a-1")])
    broken = schema.sql_script("ALTER TABLE jobs ADD COLUMN owner TEXT; SELECT * FROM no_such;")
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    with pytest.raises(StoreError) as e:
        Store.open(path)
    assert str(path) in str(e.value)
    assert f"from store schema {SCHEMA_VERSION} to {SCHEMA_VERSION + 1}" in str(e.value)
    assert "no such table: no_such" in str(e.value)
    assert header(path) == (schema.APPLICATION_ID, SCHEMA_VERSION)
    monkeypatch.undo()
    with Store.open(path) as store:  # all of it rolled back: the column too
        assert [j.job for j in store.unfinished_jobs()] == ["a-1"]
        with pytest.raises(sqlite3.OperationalError, match="no such column"):
            sql(store, "SELECT owner FROM jobs")


def test_a_migration_another_process_ran_meanwhile_is_not_run_again(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    Store.open(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # What a second process does when it read version 0 before the first migrated the file.
        schema._migrate(db, path, 0)
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
    finally:
        db.close()
    assert header(path) == (schema.APPLICATION_ID, SCHEMA_VERSION)


_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from p2psched.store import Store
    from p2psched.store.journal import JobOpened, Moved

    store = Store.open(Path(sys.argv[1]))
    store.write([JobOpened("k-1", "k", {}, 1.0, 1.0, 1.0, None)])
    batch = 0
    while True:
        store.write(
            [Moved(f"k-1-{batch:06d}-{i}", "k-1", "unscheduled", "queued", batch, None, None, 0, 0)
             for i in range(50)]
        )
        print(batch, flush=True)
        batch += 1
        if batch == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _writer(path: Path, stop_after: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(stop_after)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def test_every_batch_written_before_a_sigkill_survives_it(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    child = _writer(path, stop_after=20)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert out.split() == [str(b) for b in range(20)]

    with Store.open(path) as store:
        [job] = store.unfinished_jobs()
    assert len(job.tasks) == 20 * 50


def test_a_kill_in_the_middle_of_writing_leaves_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    child = _writer(path, stop_after=-1)  # writes until killed
    assert child.stdout is not None
    for _ in range(30):
        reported = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=60)

    with Store.open(path) as store:
        [job] = store.unfinished_jobs()
    # Every batch reported committed is there; any later one is all there or not at all.
    assert len(job.tasks) % 50 == 0 and len(job.tasks) >= (reported + 1) * 50


def test_a_job_opened_again_keeps_what_was_stored(store: Store) -> None:
    store.write([opened("a-1"), moved("a-1", "a-1-000000", "unscheduled", "queued", 1.0)])
    store.write([JobOpened("a-1", "renamed", {}, 9.0, 1.0, 1.0, None)])
    [job] = store.unfinished_jobs()
    assert (job.name, job.submitted_at, list(job.tasks)) == ("a", 1000.0, ["a-1-000000"])


def test_a_spec_with_a_timestamp_is_kept_and_reads_back_as_the_same_job(store: Store) -> None:
    import yaml

    from p2psched.scheduler.job import parse_job

    doc = yaml.safe_load("name: x\ndeadline: 2030-06-01T18:00:00Z\ntasks: [{input: 1}]\n")
    store.write([JobOpened("x-1", "x", doc, 1.0, 0.001, math.inf, 1.9e9)])
    (job,) = store.unfinished_jobs()
    assert job.spec["deadline"] == "2030-06-01T18:00:00+00:00"  # YAML's datetime, as ISO text
    assert parse_job(job.spec) == parse_job(doc)
