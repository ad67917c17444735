"""A paid-only run (an OpenAI gateway request's job): its store keeps what it committed and
paid, each document verifiable, and nothing of the job itself, which no restart takes up."""

from __future__ import annotations

from pathlib import Path

from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import DispatchConfig, JobRun
from p2psched.store import Store
from p2psched.wire.deal import Quote
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


def test_a_paid_only_run_adopts_a_standing_quote_and_asks_for_none() -> None:
    """The quote a worker gave one paid-only job places the next one's task with no quote
    asked for: its own signed commitment goes, and its receipt is verified. A job that is
    not paid-only asks for its own."""
    net = make_net(0, 1)
    me = net.run.identity
    [worker] = net.workers
    found = [ad(net.workers[worker].identity)]

    def run_one(i: int, paid_only: bool, adopted: tuple[Quote, float] | None) -> JobRun:
        run = JobRun(me, f"job{i}", [spec(i)], mtr=0, now=net.now, paid_only=paid_only)
        net.run = run
        run.add_workers(found, net.now)
        if adopted is not None:
            run.adopt_quote(worker, *adopted, 1.0, net.now)
        net.pump()
        [t] = run.tasks.values()
        assert t.state == TaskState.COMPLETED and t.receipt is not None
        assert t.receipt.job == f"job{i}"
        return run

    first = run_one(0, True, None).workers[worker]
    assert first.quote is not None
    standing = (first.quote, first.quote_until)
    asked = [run_one(i, p, standing).stats.negotiation["asked"] for i, p in [(1, True), (2, False)]]
    assert asked == [0, 1]
