"""The store's schema and migrations: a file that is not ours is refused untouched, a newer
schema is refused, an older one is migrated in order (or not at all), and a new store starts
at the latest."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from p2psched.store import Store, StoreError, schema
from p2psched.store.schema import SCHEMA_VERSION
from tests.harness.store import (
    ME,
    WORKER,
    honest_ledger,
    older_store,
    opened,
    reputation,
    run_to_completion,
    sql,
)


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


def test_a_store_of_schema_2_keeps_its_jobs_and_lists_them_after_migrating(
    tmp_path: Path,
) -> None:
    """Version 3 adds when a job was resumed, and an index to list the newest jobs: a store
    written before it lists its jobs as they were, resumed never."""
    path = tmp_path / "node.db"
    older_store(path, 2, [opened("a-1"), *run_to_completion("a-1", "a-1-000000", 0.5, [1])])
    assert header(path) == (schema.APPLICATION_ID, 2)
    with Store.open(path, own_public_key=ME.public_key) as store:
        (listed,) = store.jobs()
        assert (listed.job, listed.counts, listed.spent) == ("a-1", {"completed": 1}, 0.5)
        assert listed.resumed_at is None
    assert header(path) == (schema.APPLICATION_ID, SCHEMA_VERSION)


def test_a_store_of_schema_3_is_migrated_to_verdicts_and_reputations(tmp_path: Path) -> None:
    """Version 4 adds a receipt's verdict and the workers' reputations: a store written
    before it keeps its receipts as plain ones (spent, verified by their signatures) and
    starts with no reputation, then keeps one."""
    path = tmp_path / "node.db"
    older_store(path, 3, [opened("a-1"), *run_to_completion("a-1", "a-1-000000", 0.5, [1])])
    with Store.open(path, own_public_key=ME.public_key) as store:
        assert header(path) == (schema.APPLICATION_ID, SCHEMA_VERSION)
        assert sql(store, "SELECT verdict FROM ledger WHERE kind = 'receipt'") == [(None,)]
        assert store.spent("a-1") == 0.5 and store.verify_ledger() == []
        assert store.reputations(10) == []
        store.write([reputation(WORKER.node_id, disputed=1)])
        assert [r.disputed for r in store.reputations(10)] == [1]
