"""A paid-only run (an OpenAI gateway request's job): its store keeps what it committed and
paid, each document verifiable, and nothing of the job itself, which no restart takes up."""

from __future__ import annotations

from pathlib import Path

from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import DispatchConfig, JobRun
from p2psched.store import Store
from tests.harness.net import ad, make_net, spec


def test_a_paid_only_run_leaves_its_ledger_and_no_job_in_the_store(tmp_path: Path) -> None:
    net = make_net(0, 1)
    me = net.run.identity
    # (its output over the spool size: a paid-only run keeps it in memory all the same)
    config = DispatchConfig(spool_result_bytes=1)
    net.run = JobRun(
        me, "job", [spec(0)], mtr=0, now=net.now, config=config, durable=True, paid_only=True
    )
    [worker] = net.workers
    net.run.add_workers([ad(net.workers[worker].identity)], net.now)
    net.pump()
    [t] = net.run.tasks.values()
    assert t.state == TaskState.COMPLETED and t.output == {"out": {"n": 0}}
    with Store.open(tmp_path / "node.db", own_public_key=me.public_key) as store:
        store.write(net.run.journal)
        [paid] = store.ledger_summary()["jobs"]
        assert paid["job"] == "job" and paid["tasks_paid"] == 1
        assert store.verify_ledger() == []
        assert store.jobs() == [] and store.unfinished_jobs() == []
        assert store.stored_output("job", t.spec.task_id) is None
