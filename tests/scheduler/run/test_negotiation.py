"""The deal with workers, between the real cores: a price over the task's budget declined,
a lease that never comes, busy workers waited for, an expired quote, and workers that keep
rejecting or are always busy given up in the end."""

from __future__ import annotations

from typing import Any

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun
from p2psched.worker import manager as wm
from tests.harness.net import ad, commit, dispatch, make_net, spec

S = TaskState


def test_price_above_the_task_budget_is_declined_with_the_reason() -> None:
    net = make_net(1, 1, prices=[2.0], max_price=1.0)
    net.advance(40)
    t = net.run.tasks["job-000000"]
    assert t.state == S.FAILED
    assert "price below its minimum" in (t.error or "")


def test_scheduler_requeues_when_no_lease_comes() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    net.behave[a.node_id] = lambda m: {**m, "rid": 999} if m["t"] == "lease" else m
    net.run.add_workers([ad(a)], net.now)
    net.pump()  # the lease names a commitment never sent: the worker is dropped
    assert net.closed and "not committed" in net.closed[0][1]
    assert net.run.tasks["job-000000"].state == S.QUEUED


def test_busy_workers_are_waited_for_not_given_up() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=1, queue_depth=0)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    other = Identity.generate()
    w = net.workers[a.node_id]
    w.connected(other.node_id, other.public_key, net.now)
    commit(w, other, "theirs", net.now)  # another scheduler holds its only slot
    dispatch(w, other, "theirs", net.now)
    w.actions()
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(60)  # twice the no-worker limit
    assert net.run.tasks["job-000000"].state == S.QUEUED
    w.finished(other.node_id, "theirs", "done", None, net.now)
    w.actions()
    net.advance(5)
    assert net.run.tasks["job-000000"].state == S.COMPLETED


def test_a_quote_expired_on_arrival_counts_as_a_decline() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, quote_valid_s=-1.0)}  # its clock is behind
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(40)
    t = net.run.tasks["job-000000"]
    assert t.state == S.FAILED and "expired" in (t.error or "")


def test_a_worker_that_keeps_rejecting_is_given_up() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    commits = []

    def reject(m: dict[str, Any]) -> dict[str, Any]:
        if m["t"] != "lease":
            return m
        commits.append(m["rid"])
        return {"t": "reject", "rid": m["rid"], "reason": "changed my mind", "busy": False}

    net.behave[a.node_id] = reject
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(60)
    t = net.run.tasks["job-000000"]
    assert t.state == S.FAILED and "changed my mind" in (t.error or "")
    assert len(commits) == 3  # not for ever


def test_a_worker_always_busy_on_commit_is_given_up_in_the_end() -> None:
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a)}
    net.run = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now)
    net.behave[a.node_id] = lambda m: (
        {"t": "reject", "rid": m["rid"], "reason": "state changed", "busy": True}
        if m["t"] == "lease"
        else m
    )
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(200, step=1.0)
    assert net.run.done and net.run.tasks["job-000000"].state == S.FAILED
