"""Commitments come in batches: a worker whose queue is filling again gets one commitment
(one signature, one lease) for several tasks once its room is back to half of what it
quoted, rather than one per slot freed; it never runs dry while tasks wait for it."""

from __future__ import annotations

from typing import Any

from p2psched.identity import Identity
from p2psched.scheduler.run import JobRun
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, make_net, spec


def _one_worker(tasks: int) -> tuple[Net, bytes, list[int]]:
    """A net of `tasks` tasks and one worker of one slot and a queue of four, holding what
    it starts; and the sizes of the leases it sends, as they go."""
    net = make_net(0, 0)
    a = Identity.generate()
    net.workers = {a.node_id: wm.TaskManager(a, slots=1, queue_depth=4)}
    net.run = JobRun(net.run.identity, "job", [spec(k) for k in range(tasks)], mtr=0, now=net.now)
    leases: list[int] = []

    def note(m: dict[str, Any]) -> dict[str, Any]:
        if m["t"] == "lease":
            leases.append(len(m["tasks"]))
        return m

    net.behave[a.node_id] = note
    net.hold = True
    net.run.add_workers([ad(a)], net.now)
    net.pump()
    return net, a.node_id, leases


def test_a_worker_gets_a_commitment_per_batch_not_per_slot_freed_and_never_runs_dry() -> None:
    net, worker, leases = _one_worker(20)
    assert leases == [5]  # its quote's room: one running, four queued
    ran = 0
    while net.started:
        ((_, peer, task),) = net.started
        net.started = []
        net.workers[worker].finished(peer, task["id"], "ok", None, net.now)
        net.pump()
        ran += 1
        # The next one started as this one ended: its queue was never empty.
        assert net.started or ran == 20
    assert net.run.done and net.run.counts() == {"completed": 20}
    # Refilled at half its room (three places free), never one task at a time.
    assert leases == [5, 3, 3, 3, 3, 3]
    assert net.run.stats.negotiation["commit"] == 6


def test_the_last_tasks_go_at_once_when_fewer_are_left_than_a_batch() -> None:
    net, worker, leases = _one_worker(6)
    for _ in range(2):  # two places free: not a batch, but all that is left
        ((_, peer, task),) = net.started
        net.started = []
        net.workers[worker].finished(peer, task["id"], "ok", None, net.now)
        net.advance(0.01, step=0.01)  # (a worker signs a result alone at its next tick)
    assert leases == [5, 1]


def test_workers_of_one_job_all_get_work_and_it_all_completes() -> None:
    net = make_net(40, 3)  # two slots and a queue of two each: batches of two
    net.advance(5)
    assert net.run.done and net.run.counts() == {"completed": 40}
    assert {t.worker for t in net.run.tasks.values()} == set(net.workers)
    assert net.run.stats.negotiation["commit"] < 40 / 1.5
