"""The node's private view of workers: a penalty and a circuit breaker for one that keeps
failing or stalls, rank restored by successes, and a bounded number of workers kept, on
explicit `now` values."""

from __future__ import annotations

import json

import pytest

from p2psched.scheduler.worker_views import WorkerViews

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
