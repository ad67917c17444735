"""The deal with workers, between the real cores: a price over the task's budget declined,
a lease that never comes, busy workers waited for, an expired quote, workers that keep
rejecting or are always busy given up in the end, what a quote request tells a worker
(the tasks' timeout, input size and priority) refused or priced by, and a round's
commitments under one signature."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from p2psched.identity import Identity
from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun, Send
from p2psched.wire.deal import BatchProof
from p2psched.wire.messages import Commit
from p2psched.worker import manager as wm
from p2psched.worker.policy import DriverCaps, PriorityPrices, Terms
from tests.harness.net import Net, ad, commit, dispatch, make_net, net_with, spec

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


@pytest.mark.parametrize(
    ("task", "says"),
    [
        (spec(0, timeout=7 * 86400.0), "timeout 604800 s is over this worker's max_timeout_s 3600"),
        (
            replace(spec(0), input={"text": "x" * 1000}),
            "input of 1009 bytes is over this worker's max_input_bytes 1000",
        ),
    ],
)
def test_a_task_over_a_workers_caps_is_declined_in_its_quote_and_fails_naming_the_cap(
    task: TaskSpec, says: str
) -> None:
    """The quote request says the task's timeout and its largest input: a worker refuses at
    once what its operator caps, and the task fails (with no worker left) saying which cap."""
    net = make_net(0, 0)
    a = Identity.generate()
    caps = {"echo": DriverCaps(max_timeout_s=3600.0, max_input_bytes=1000)}
    net.workers = {a.node_id: wm.TaskManager(a, terms=Terms(caps=caps))}
    net.run = JobRun(net.run.identity, "job", [task], mtr=0, now=net.now)
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(40)
    [t] = net.run.tasks.values()
    assert t.state == S.FAILED and t.attempts == 0 and says in str(t.error)
    assert net.run.stats.negotiation["commit"] == 0  # refused at the quote: nothing was sent


def urgent_job_and_two_workers(n_tasks: int, mtr: float) -> tuple[Net, Identity, Identity]:
    """A job of `n_tasks` tasks at priority 9, and two workers (not yet found): one asking
    0.5 at its low band and 4.0 at its high one, one asking 1.5 whatever the priority."""
    net = make_net(0, 0)
    banded, plain = Identity.generate(), Identity.generate()
    prices = PriorityPrices(low=0.5, normal=1.0, high=4.0)
    net.workers = {
        banded.node_id: wm.TaskManager(banded, price=1.0, terms=Terms(prices=prices)),
        plain.node_id: wm.TaskManager(plain, price=1.5),
    }
    urgent = [replace(spec(i), priority=9) for i in range(n_tasks)]
    net.run = JobRun(net.run.identity, "job", urgent, mtr=mtr, now=net.now)
    return net, banded, plain


@pytest.mark.parametrize("mtr", [0.0, 0.001])
def test_the_jobs_priority_travels_in_the_quote_request_and_the_worker_prices_by_it(
    mtr: float,
) -> None:
    """A worker whose ad shows its low band's price quotes its high band to an urgent job:
    the job takes the cheaper of the quotes (at MTR 0 too, where only the cheapest may)."""
    net, banded, plain = urgent_job_and_two_workers(4, mtr)
    net.run.add_workers([ad(banded, price=0.5), ad(plain, price=1.5)], net.now)
    net.pump()
    net.advance(5)
    assert {(t.state, t.price, t.worker) for t in net.run.tasks.values()} == {
        (S.COMPLETED, 1.5, plain.node_id)
    }
    quote = net.run.workers[banded.node_id].quote
    assert quote is not None and quote.price == 4.0


def test_at_mtr_0_a_quote_above_the_ad_leaves_the_cheapest_place_to_the_next_worker() -> None:
    """The worker whose ad is cheapest is reached late (its dial hangs), so the others wait
    for it, the cheapest (MTR 0); its quote then asks more than its ad (the job is urgent):
    the cheapest is the other worker now, and the tasks go there."""
    net, banded, plain = urgent_job_and_two_workers(2, 0.0)
    net.stall.add(banded.node_id)
    net.run.add_workers([ad(banded, price=0.5), ad(plain, price=1.5)], net.now)
    net.pump()
    net.advance(3)
    assert all(t.state == S.QUEUED for t in net.run.tasks.values())  # waiting for the cheapest
    net.stall.discard(banded.node_id)
    net.dialed(banded.node_id, True)
    net.pump()
    net.advance(3)
    assert {(t.state, t.worker) for t in net.run.tasks.values()} == {(S.COMPLETED, plain.node_id)}


def test_a_rounds_commitments_to_several_workers_go_under_one_signature_and_all_are_taken() -> None:
    """Eight tasks placed in one round over four workers: four commitments, one signature
    (over their Merkle root, each with its proof); every worker takes its own and runs it."""
    net = net_with("round_robin", 8, 4)
    commits: list[Commit] = []
    actions = net.run.actions

    def recorded() -> list[Any]:
        out = actions()
        for a in out:
            if isinstance(a, Send) and isinstance(a.message, Commit):
                commits.append(a.message)
        return out

    net.run.actions = recorded  # type: ignore[method-assign]
    net.advance(10)
    assert all(t.state == S.COMPLETED for t in net.run.tasks.values())
    assert {c.commitment.worker for c in commits} == set(net.workers)
    assert len(commits) == 4 and len({c.commitment.sig for c in commits}) == 1
    key = net.run.identity.public_key
    for c in commits:
        assert isinstance(c.commitment.batch, BatchProof) and c.commitment.verify(key)
