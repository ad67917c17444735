"""Journal entries into rows: a batch is written whole or refused whole, and what a batch
leaves out (addresses, a job opened again) keeps what was stored."""

from __future__ import annotations

import pytest

from p2psched.store import Store
from p2psched.store.journal import Committed, JobOpened, JobResumed
from tests.harness.store import OTHER_WORKER, WORKER, charged, commitment, moved, opened


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


def test_a_job_resumed_that_was_never_opened_refuses_the_batch(store: Store) -> None:
    store.write([opened("a-1")])
    with pytest.raises(ValueError, match="name jobs with no JobOpened before them: ghost-1"):
        store.write([JobResumed("a-1", 5.0), JobResumed("ghost-1", 5.0)])
    listed = store.job("a-1")
    assert listed is not None and listed.resumed_at is None
    store.write([JobResumed("a-1", 5.0)])
    listed = store.job("a-1")
    assert listed is not None and listed.resumed_at == 5.0


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


def test_a_job_opened_again_keeps_what_was_stored(store: Store) -> None:
    store.write([opened("a-1"), moved("a-1", "a-1-000000", "unscheduled", "queued", 1.0)])
    store.write([JobOpened("a-1", "renamed", {}, 9.0, 1.0, 1.0, None)])
    [job] = store.unfinished_jobs()
    assert (job.name, job.submitted_at, list(job.tasks)) == ("a", 1000.0, ["a-1-000000"])
