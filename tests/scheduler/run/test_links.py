"""A job's links to workers follow one table (`scheduler.run.links`): the moves the shell's
channel events can cause are all in it, so a late event never aborts a job."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2psched.scheduler.lifecycle import IllegalTransition, TaskState
from p2psched.scheduler.run import Close, Link
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
