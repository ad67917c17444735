"""A job's links to workers follow one table (`scheduler.run.links`): the moves the shell's
channel events can cause are all in it, so a late event never aborts a job."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import IllegalTransition, TaskState
from p2psched.scheduler.run import Close, JobRun, Link
from p2psched.store import StoredTask
from tests.harness.net import ad, make_net, spec


def test_the_end_of_a_closed_link_reported_after_a_redial_does_not_stop_the_job() -> None:
    """The run closes a silent link, a fresh ad makes it dial again, the old link's end is
    reported only then, and the new channel comes up: the job goes on."""
    net = make_net(2, 1)
    w = next(iter(net.workers))
    net.hold = True
    net.run.add_tasks([spec(5)], net.now)
    net.pump()
    state = net.run.workers[w]
    assert state.link == Link.UP
    net.up.discard(w)  # it goes silent while it holds tasks
    for _ in range(200):
        net.now += 0.5
        net.run.tick(net.now)
        if any(isinstance(a, Close) for a in net.run.actions()):
            break
    assert state.link == Link.DOWN
    net.run.add_workers([replace(ad(net.workers[w].identity), seq=2)], net.now)
    net.run.actions()
    assert state.link == Link.CONNECTING
    net.run.disconnected(w, "cancelled", net.now)  # the old link's end, late
    net.run.actions()
    net.run.connected(w, net.workers[w].identity.public_key, net.now)
    assert state.link == Link.UP
    assert all(t.state != TaskState.FAILED for t in net.run.tasks.values())


def test_a_move_the_table_does_not_list_is_a_bug_and_raises() -> None:
    with pytest.raises(IllegalTransition, match="from up to none"):
        Link.UP.to(Link.NONE)
    with pytest.raises(IllegalTransition, match="from connecting to none"):
        Link.CONNECTING.to(Link.NONE)
    with pytest.raises(IllegalTransition, match="from up to connecting"):
        Link.UP.to(Link.CONNECTING)


def test_a_worker_has_dealt_with_a_job_once_its_link_was_up_or_it_holds_tasks() -> None:
    """What a scheduler's link takes before the worker speaks follows this: a stranger says
    what it is first; a worker that dealt with the job may open with a result it owes."""
    net = make_net(1, 1)
    [w] = net.workers
    assert net.run.dealt_with(w)  # its link was up: it quoted, and ran the task
    stranger = Identity.generate()
    net.run.add_workers([ad(stranger)], net.now)
    assert net.run.workers[stranger.node_id].link != Link.UP  # (a worker it knows of)
    assert not net.run.dealt_with(stranger.node_id)
    restored = JobRun(net.run.identity, "job", [spec(0)], mtr=0, now=net.now, durable=True)
    held = StoredTask("job-000000", "running", stranger.node_id, 0.0, 0, None, net.now)
    restored.restore({"job-000000": held}, lambda w: ("127.0.0.1:1",), net.now)
    assert restored.dealt_with(stranger.node_id)  # it held the task before we restarted
    assert not restored.dealt_with(w)
