"""The node's SQLite store: a job read back as it was written (states, results, receipts),
jobs listed and resumed, its owner and file mode kept, and every batch written before a
real SIGKILL still there after it."""

from __future__ import annotations

import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from p2psched.store import Store, StoreError
from p2psched.store.journal import Forgotten, JobFinished, JobOpened, JobResumed
from p2psched.wire.codec import encode
from p2psched.wire.deal import packed_hash
from tests.harness.store import (
    ME,
    OTHER_WORKER,
    WORKER,
    charged,
    honest_ledger,
    moved,
    opened,
    reputation,
    run_to_completion,
    sql,
)

ROOT = Path(__file__).resolve().parents[2]


def test_a_job_comes_back_with_its_task_states_result_and_receipt(store: Store) -> None:
    store.write([opened("sum-1")])
    store.write(run_to_completion("sum-1", "sum-1-000000", 0.5, {"sum": 6}))
    store.write(
        [
            moved("sum-1", "sum-1-000001", "unscheduled", "queued", 1000.0),
            moved(
                "sum-1",
                "sum-1-000001",
                "queued",
                "failed",
                1003.0,
                reason="no worker fits",
                error="no worker fits",
            ),
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


def test_a_listed_job_has_what_its_status_shows_spent_workers_and_resumption(
    store: Store,
) -> None:
    """What a node shows of a job it no longer keeps in memory: its budget, what it paid
    (ok receipts only), how many workers its tasks ran on, and when it was taken up again."""
    store.write([opened("a-1", budget=math.inf), opened("b-1")])
    store.write(run_to_completion("a-1", "a-1/0", 0.5, 1))
    store.write(
        run_to_completion("a-1", "a-1/1", 0.25, 2)[:-2]
        + [
            charged("a-1", "a-1/1", 0.25, 2, worker=OTHER_WORKER),
            moved("a-1", "a-1/1", "sent", "completed", 1011, worker=OTHER_WORKER.node_id),
        ]
    )
    store.write(run_to_completion("a-1", "a-1/2", 0.5, 3)[:-2])  # sent, then failed unpaid
    store.write(
        [
            charged("a-1", "a-1/2", 0.5, None, ok=False),
            moved("a-1", "a-1/2", "sent", "failed", 1012, error="it broke (1 worker failed it so)"),
            JobResumed("a-1", at=1005.0),
            JobFinished("a-1", at=1020.0),
        ]
    )

    job = store.job("a-1")
    assert job is not None
    assert (job.name, job.budget, job.finished_at, job.resumed_at) == (
        "a",
        math.inf,
        1020.0,
        1005.0,
    )
    assert job.counts == {"completed": 2, "failed": 1}
    assert job.spent == 0.75 and job.workers == 2
    other = store.job("b-1")
    assert other is not None and (other.spent, other.workers, other.resumed_at) == (0.0, 0, None)
    assert other.budget == 100.0 and other.counts == {}
    assert store.job("c-1") is None
    assert store.job_spec("a-1") == opened("a-1").spec and store.job_spec("c-1") is None


def test_jobs_lists_the_newest_first_however_many_there_are(store: Store) -> None:
    store.write([JobOpened(f"j-{i}", "j", {}, float(i), 1.0, 1.0, None) for i in range(10_000)])
    store.write([moved("j-9998", "j-9998/0", "unscheduled", "queued", 1)])
    listed = store.jobs(limit=3)
    assert [j.job for j in listed] == ["j-9999", "j-9998", "j-9997"]
    assert [j.counts for j in listed] == [{}, {"queued": 1}, {}]
    # Found through the index, not by sorting every job.
    plan = " ".join(
        str(row)
        for row in sql(
            store, "EXPLAIN QUERY PLAN SELECT id FROM jobs ORDER BY submitted_at DESC, id LIMIT 3"
        )
    )
    assert "jobs_by_submission" in plan, plan


def test_a_jobs_tasks_come_by_index_and_its_settled_ones_as_they_settled(store: Store) -> None:
    """A job's tasks in the order they were queued (their index); the settled ones in the
    order they settled, with their results, a page at a time, a page bounded in bytes."""
    store.write([opened("a-1")])
    store.write([moved("a-1", f"a-1/{i}", "unscheduled", "queued", 1000) for i in range(12)])
    store.write(run_to_completion("a-1", "a-1/10", 0.5, "x" * 600)[1:])
    w = WORKER.node_id
    later = moved("a-1", "a-1/2", "sent", "completed", 1015.0, worker=w, price=0.5, attempts=1)
    store.write(run_to_completion("a-1", "a-1/2", 0.5, "y" * 600)[1:-1] + [later])
    store.write([moved("a-1", "a-1/7", "queued", "failed", 1020, error="no worker fits")])

    assert [t.task for t in store.job_tasks("a-1")] == [f"a-1/{i}" for i in range(12)]
    assert [t.task for t in store.job_tasks("a-1", "completed")] == ["a-1/2", "a-1/10"]
    (failed,) = store.job_tasks("a-1", "failed")
    assert (failed.error, failed.output) == ("no worker fits", None)
    final = ("completed", "failed")
    assert [t.task for t in store.settled_tasks("a-1", final, 0, 10, 10_000)] == [
        "a-1/10", "a-1/2", "a-1/7"
    ]  # fmt: skip
    first, second = store.settled_tasks("a-1", final, 0, 10, 10_000)[:2]
    assert first.output == encode("x" * 600) and first.receipt is not None
    assert first.worker_public_key == WORKER.public_key
    # A page stops once its outputs pass the bound; the first comes whatever its size.
    assert [t.task for t in store.settled_tasks("a-1", final, 0, 10, 500)] == ["a-1/10"]
    assert [t.task for t in store.settled_tasks("a-1", final, 1, 10, 500)] == ["a-1/2"]
    assert [t.task for t in store.settled_tasks("a-1", final, 2, 10, 500)] == ["a-1/7"]
    assert store.settled_tasks("a-1", final, 3, 10, 500) == []


def test_a_12_mib_result_is_kept_in_a_file_named_by_its_hash(store: Store) -> None:
    """A result over the spool size stays out of the store's file (a resumed job would read
    every row into memory) and goes whole into one of its own, which its row names."""
    data = os.urandom(12 << 20)
    big, small = encode(data), {"sum": 6}
    store.write([opened("big-1")])
    store.write(run_to_completion("big-1", "big-1-000000", 1.0, data))
    store.write(run_to_completion("big-1", "big-1-000001", 1.0, small))
    [job] = store.unfinished_jobs()
    task = job.tasks["big-1-000000"]
    assert task.receipt is not None and task.receipt.result_hash == packed_hash(big)
    assert task.output == b"" and task.output_file == packed_hash(big).hex()
    kept = store.stored_output("big-1", "big-1-000000")
    assert kept == store.outputs / packed_hash(big).hex() and kept.read_bytes() == big
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert sql(store, "SELECT MAX(LENGTH(output)) FROM results") == [(len(encode(small)),)]
    # One under the spool size stays in its row.
    assert job.tasks["big-1-000001"].output == encode(small)
    assert store.stored_output("big-1", "big-1-000001") == encode(small)
    assert [p.name for p in store.outputs.iterdir()] == [packed_hash(big).hex()]


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
            [Moved(f"k-1-{batch:06d}-{i}", "k-1", "unscheduled", "queued", batch,
                   None, None, 0, 0, None)
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


def test_a_spec_with_a_timestamp_is_kept_and_reads_back_as_the_same_job(store: Store) -> None:
    import yaml

    from p2psched.scheduler.job import parse_job

    doc = yaml.safe_load("name: x\ndeadline: 2030-06-01T18:00:00Z\ntasks: [{input: 1}]\n")
    store.write([JobOpened("x-1", "x", doc, 1.0, 0.001, math.inf, 1.9e9)])
    (job,) = store.unfinished_jobs()
    assert job.spec["deadline"] == "2030-06-01T18:00:00+00:00"  # YAML's datetime, as ISO text
    assert parse_job(job.spec) == parse_job(doc)


def test_a_listed_job_counts_a_task_run_in_copies_once(store: Store) -> None:
    """A job that verified its results: each task is counted once, completed if one of its
    copies was (its result kept), and its copies are not tasks of their own."""
    store.write(
        [
            opened("v-1"),
            moved("v-1", "v-1/0", "verifying", "disputed", 2),  # lost to its two copies
            moved("v-1", "v-1/0~2", "verifying", "completed", 2),
            moved("v-1", "v-1/0~3", "verifying", "completed", 2),
            moved("v-1", "v-1/1", "verifying", "completed", 2),
            moved("v-1", "v-1/1~2", "queued", "aborted", 2),
            moved("v-1", "v-1/2", "verifying", "failed", 2),  # no quorum
            moved("v-1", "v-1/2~2", "verifying", "failed", 2),
            moved("v-1", "v-1/10", "sent", "running", 2),  # (its id starts as v-1/1's)
        ]
    )
    (listed,) = store.jobs()
    assert listed.counts == {"completed": 2, "failed": 1, "running": 1}


def test_a_workers_reputation_survives_a_reopen_one_row_each_newest_kept(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    liar = reputation(WORKER.node_id, 2000.0, disputed=1, skip_until=9000.0, skip_reason="lied")
    with Store.open(path, own_public_key=ME.public_key) as store:
        store.write([reputation(WORKER.node_id, 1000.0, verified=3), liar])  # the last one wins
        store.write([reputation(OTHER_WORKER.node_id, 1500.0, verified=7)])
    with Store.open(path, own_public_key=ME.public_key) as store:
        assert store.reputations(10) == [reputation(OTHER_WORKER.node_id, 1500.0, verified=7), liar]
        assert store.reputations(1) == [liar]  # the most recently updated, within the bound
        store.write([Forgotten(OTHER_WORKER.node_id)])  # dropped from memory: from the store too
        assert store.reputations(10) == [liar]


def test_a_task_run_in_copies_settles_once_with_the_copy_its_job_kept(store: Store) -> None:
    """A stored job that verified results: its settled tasks leave the copies out, and a task
    whose own result lost shows the kept copy's (what `results` of a past job reads)."""
    from p2psched.scheduler.past_jobs import PastTasks
    from tests.harness.store import charged

    store.write(
        [
            opened("v-1"),
            moved("v-1", "v-1/0", "sent", "verifying", 1001),
            charged("v-1", "v-1/0", 0.5, "wrong", verdict="pending"),
            moved("v-1", "v-1/0~2", "sent", "verifying", 1002),
            charged("v-1", "v-1/0~2", 0.5, "right", verdict="pending"),
            moved("v-1", "v-1/0~3", "sent", "verifying", 1003),
            charged("v-1", "v-1/0~3", 0.5, "right", verdict="pending"),
            moved("v-1", "v-1/0", "verifying", "disputed", 1004),
            moved("v-1", "v-1/0~2", "verifying", "completed", 1004),
            moved("v-1", "v-1/0~3", "verifying", "completed", 1004),
            *run_to_completion("v-1", "v-1/1", 0.5, "one"),
        ]
    )
    settled = store.settled_tasks("v-1", ("completed", "disputed"), 0, 10, 1 << 20)
    assert sorted(t.task for t in settled) == ["v-1/0", "v-1/1"]
    kept = store.kept_copy("v-1", "v-1/0")
    assert kept is not None and kept.task == "v-1/0~2"
    assert store.kept_copy("v-1", "v-1/1") is None
    views = {v["task"]: v for v in PastTasks(store, "v-1", {}).settled(0, 10, 1 << 20)}
    assert views["v-1/0"]["output"] == "right" and views["v-1/0"]["kept"] == "v-1/0~2"
    assert views["v-1/0"]["state"] == "completed"
    assert views["v-1/1"]["output"] == "one" and "kept" not in views["v-1/1"]
