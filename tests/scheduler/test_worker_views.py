"""The node's private view of workers: a penalty and a circuit breaker for one that keeps
failing or stalls, rank restored by successes, and a bounded number of workers kept, on
explicit `now` values."""

from __future__ import annotations

import json

import pytest

from p2psched.scheduler.worker_views import ReputationRules, WorkerViews
from p2psched.store.journal import Forgotten, Reputation

A = b"\xaa" * 32
B = b"\xbb" * 32


def test_a_failing_worker_is_penalised_skipped_then_half_open() -> None:
    views = WorkerViews(cool_off=300.0)
    assert views.penalty(A, 0.0) == 1.0 and not views.skipped(A, 0.0)
    views.succeeded(A, "m", 2.0, "t0", now=0.0)
    views.failed(A, "t1", "driver error", now=10.0)
    assert views.penalty(A, 10.0) > 1.0
    assert not views.skipped(A, 10.0)
    views.failed(A, "t2", "driver error", now=20.0)
    views.failed(A, "t3", "silent", now=30.0, stalled=True)  # third in a row
    assert views.skipped(A, 30.0)
    assert views.skipped(A, 329.9)
    assert views.state(A, 100.0) == "open"

    assert not views.skipped(A, 330.0)  # cool-off over: one more chance
    assert views.state(A, 330.0) == "half-open"
    views.failed(A, "t4", "driver error", now=340.0)  # it wasted it: open again at once
    assert views.skipped(A, 341.0) and views.skipped(A, 639.0)
    assert not views.skipped(A, 640.0)


def test_successes_restore_rank() -> None:
    views = WorkerViews(cool_off=300.0)
    for i in range(3):
        views.failed(A, f"t{i}", "boom", now=float(i), stalled=True)
    bad = views.penalty(A, 3.0)
    assert bad > 2.0  # stalls weigh more than failures
    views.succeeded(A, "m", 1.0, "t3", now=400.0)  # the half-open chance, taken
    assert views.state(A, 400.0) == "closed"
    penalties = [views.penalty(A, 400.0)]
    for i in range(20):
        views.succeeded(A, "m", 1.0, f"ok{i}", now=401.0 + i)
        penalties.append(views.penalty(A, 401.0 + i))
    assert penalties == sorted(penalties, reverse=True)
    assert penalties[-1] < 1.05 < bad
    # one failure after a good run does not trip the breaker
    views.failed(A, "t99", "boom", now=500.0)
    assert not views.skipped(A, 500.0)


def test_a_stalling_worker_ranks_below_a_failing_one() -> None:
    views = WorkerViews()
    for w, stalled in ((A, False), (B, True)):
        views.succeeded(w, "m", 1.0, "a", now=0.0)
        views.failed(w, "b", "x", now=1.0, stalled=stalled)
    assert views.penalty(B, 1.0) > views.penalty(A, 1.0) > 1.0


def test_a_mostly_failing_worker_is_skipped_without_a_streak() -> None:
    views = WorkerViews()
    # never two failures in a row; 2 of 5 failed: not skipped yet
    for i, ok in enumerate([False, True, False, True, True]):
        if ok:
            views.succeeded(A, "m", 1.0, f"t{i}", now=float(i))
        else:
            views.failed(A, f"t{i}", "boom", now=float(i))
    assert not views.skipped(A, 5.0)
    # 3 of 6, the latest weighing most (1/5 from the fifth task on): over half
    views.failed(A, "t5", "boom", now=5.0)
    assert views.skipped(A, 5.0)


def test_penalty_fades_with_time_without_news() -> None:
    views = WorkerViews(rate_half_life=3600.0)
    views.failed(A, "t", "boom", now=0.0)
    assert views.penalty(A, 0.0) == pytest.approx(2.0)
    assert views.penalty(A, 3600.0) == pytest.approx(1.5)


def test_view_is_json_and_says_what_happened() -> None:
    views = WorkerViews()
    views.succeeded(A, "m", 2.0, "t1", now=1.0)
    views.succeeded(A, "m", 4.0, "t2", now=2.0)
    views.succeeded(A, None, 1.0, "t3", now=3.0)
    views.failed(A, "t4", "x" * 1000, now=4.0, stalled=True)
    doc = json.loads(json.dumps(views.view(A, now=5.0)))
    assert doc["worker"] == A.hex()
    assert (doc["succeeded_tasks"], doc["failed_tasks"], doc["stalls"]) == (3, 1, 1)
    assert doc["last_task"]["task"] == "t4" and doc["last_task"]["outcome"] == "stalled"
    assert len(doc["last_task"]["reason"]) == 300
    assert {"model": "m", "count": 2, "mean_run": 3.0} in doc["performance"]["models"]
    assert {"model": None, "count": 1, "mean_run": 1.0} in doc["performance"]["models"]
    assert doc["state"] == "closed" and doc["penalty"] > 1.0
    with pytest.raises(KeyError):
        views.view(B)


def test_views_keep_at_most_max_workers_dropping_the_longest_unseen() -> None:
    views = WorkerViews(max_workers=2)
    views.failed(A, "t", "x", now=0.0)
    views.succeeded(B, "m", 1.0, "t", now=1.0)
    views.succeeded(A, "m", 1.0, "t", now=2.0)  # A seen again: B is now the oldest
    views.succeeded(b"\xcc" * 32, "m", 1.0, "t", now=3.0)
    assert len(views) == 2
    assert A in views and B not in views


def test_a_dispute_ranks_a_worker_lower_and_bars_it_for_skip_s() -> None:
    views = WorkerViews(rules=ReputationRules(max_disputes=2, skip_s=1000.0))
    for i in range(3):
        views.verified(A, f"t{i}", now=float(i))
        views.verified(B, f"t{i}", now=float(i))
    assert (views.clean(A), views.disputes(A), views.penalty(A, 3.0)) == (3, 0, 1.0)
    views.disputed(A, "t3", "result differs from the canonical one", now=10.0)
    assert (views.clean(A), views.disputes(A)) == (0, 1)
    assert views.penalty(A, 10.0) > views.penalty(B, 10.0) == 1.0  # ranked lower...
    assert not views.skipped(A, 10.0) and views.barred(A, 10.0) is None  # ... not barred yet
    views.succeeded(A, "m", 1.0, "t4", now=11.0)  # a success changes none of it
    views.disputed(A, "t5", "result differs from the canonical one", now=20.0)
    assert views.skipped(A, 20.0) and views.skipped(A, 1019.9)
    reason = views.barred(A, 20.0)
    assert reason is not None and "t5 was disputed: result differs" in reason and "16 min" in reason
    assert views.view(A, 20.0)["reputation"]["barred"] is True
    views.succeeded(A, "m", 1.0, "t6", now=30.0)  # nor does a success lift the bar
    assert views.skipped(A, 30.0)
    assert not views.skipped(A, 1020.0) and views.barred(A, 1020.0) is None  # served its time
    assert views.penalty(A, 1020.0) > 1.0  # its disputes still rank it lower...
    before = views.penalty(A, 1020.0)
    for i in range(20):
        views.verified(A, f"ok{i}", now=1021.0 + i)
    assert 1.0 < views.penalty(A, 1041.0) < before  # ... less, as clean results accrue


def test_a_failed_capacity_challenge_ranks_lower_and_bars_past_its_threshold() -> None:
    views = WorkerViews(rules=ReputationRules(max_failed_challenges=1, skip_s=600.0))
    assert views.capacity(A) == "unknown"
    views.challenged(A, True, None, now=0.0)
    assert views.capacity(A) == "passed" and views.penalty(A, 0.0) == 1.0
    views.challenged(A, False, "row 17 of the product is wrong", now=5.0)
    assert views.capacity(A) == "failed" and views.penalty(A, 5.0) > 1.0
    assert views.skipped(A, 5.0) and not views.skipped(A, 605.0)
    assert "row 17 of the product is wrong" in (views.barred(A, 5.0) or "")
    record = views.view(A, 5.0)["reputation"]
    assert (record["challenges_passed"], record["challenges_failed"]) == (1, 1)


def test_zero_thresholds_never_bar_and_a_mismatch_is_only_noted() -> None:
    views = WorkerViews(rules=ReputationRules(max_disputes=0, max_failed_challenges=0))
    views.disputed(A, "t", "differs", now=0.0)
    views.challenged(A, False, "too slow", now=0.0)
    assert not views.skipped(A, 0.0) and views.penalty(A, 0.0) > 1.0
    views.duration_mismatch(B, "t", claimed_s=1.0, measured_s=9.0, now=0.0)
    assert views.view(B)["reputation"]["duration_mismatches"] == 1
    assert not views.skipped(B, 0.0) and views.penalty(B, 0.0) > 1.0


def test_changes_are_handed_out_once_each_and_load_back_the_same() -> None:
    views = WorkerViews(max_workers=2)
    assert views.changed() == []
    views.disputed(A, "t1", "differs", now=10.0)
    views.verified(A, "t2", now=11.0)
    views.succeeded(B, "m", 1.0, "t", now=12.0)
    changed = views.changed()
    assert sorted(r.worker for r in changed if isinstance(r, Reputation)) == [A, B]  # once each
    assert views.changed() == []  # until something changes again
    again = WorkerViews(max_workers=2)
    again.load([r for r in changed if isinstance(r, Reputation)])
    assert again.view(A, 20.0)["reputation"] == views.view(A, 20.0)["reputation"]
    assert again.skipped(A, 20.0) and again.disputes(A) == 1 and again.changed() == []
    views.failed(b"\xcc" * 32, "t", "x", now=13.0)  # past max_workers: B goes (A is barred)
    assert Forgotten(B) in views.changed()


def test_changes_nobody_takes_stay_within_max_workers() -> None:
    views = WorkerViews(max_workers=2)  # (a scheduler with no store never takes them)
    for i in range(50):
        views.verified(bytes([i]) * 32, "t", now=float(i))
    changed = views.changed()
    assert sum(isinstance(c, Forgotten) for c in changed) == 2
    assert sum(isinstance(c, Reputation) for c in changed) == 2


def test_new_workers_do_not_push_a_barred_one_out_of_the_records_while_its_bar_runs() -> None:
    # Dropping the longest-unseen record forgot its bar: a barred worker is never seen (it
    # gets no tasks), so enough other workers (fresh identities cost nothing) lifted it early.
    views = WorkerViews(max_workers=3, rules=ReputationRules(max_disputes=1, skip_s=1000.0))
    views.disputed(A, "t", "differs", now=0.0)
    for i in range(10):
        views.failed(bytes([i]) * 32, "t", "x", now=1.0 + i)
    assert len(views) == 3
    assert views.skipped(A, 20.0) and "t was disputed" in (views.barred(A, 20.0) or "")
    assert all(not isinstance(c, Forgotten) or c.worker != A for c in views.changed())
    views.failed(B, "t", "x", now=1000.0)  # its bar over: it may go like any other
    views.failed(b"\xcc" * 32, "t", "x", now=1001.0)
    assert A not in views and len(views) == 3


def test_when_every_record_is_barred_the_oldest_still_goes() -> None:
    views = WorkerViews(max_workers=2, rules=ReputationRules(max_disputes=1, skip_s=1000.0))
    views.disputed(A, "t", "differs", now=0.0)
    views.disputed(B, "t", "differs", now=1.0)
    views.failed(b"\xcc" * 32, "t", "x", now=2.0)
    assert A not in views and B in views and b"\xcc" * 32 in views
