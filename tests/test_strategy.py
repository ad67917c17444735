"""Each strategy's choice on crafted candidates, and every strategy (late binding through its
own reserve/ready protocol) running whole jobs between the real scheduler and worker cores."""

from __future__ import annotations

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import Send
from p2psched.worker import manager as wm
from tests.harness.net import commit, dispatch, on_wire, wire

S = TaskState


def test_a_task_that_started_meanwhile_is_not_taken_back() -> None:
    w = wm.TaskManager(Identity.generate(), slots=1, queue_depth=2)
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    for tid in ("a", "b"):
        commit(w, sched, tid, 0.0)
        dispatch(w, sched, tid, 0.0)
    w.actions()
    w.receive(sched.node_id, wire({"t": "withdraw", "rid": 7, "tasks": ["a", "b"]}), 1.0)
    (answer,) = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    assert answer == {"t": "withdrawn", "rid": 7, "tasks": ["b"]}  # "a" runs: it stays
