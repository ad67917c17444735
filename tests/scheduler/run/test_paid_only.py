"""A paid-only run (an OpenAI gateway request's job): its store keeps what it committed and
paid, each document verifiable, and nothing of the job itself, which no restart takes up."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from p2psched.identity import Identity
from p2psched.scheduler.estimate import Tokens
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.predictor import Predictor
from p2psched.scheduler.run import DispatchConfig, JobRun
from p2psched.scheduler.standing import StandingQuotes
from p2psched.store import Store
from p2psched.wire.deal import Quote
from p2psched.worker import manager as wm
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
            run.adopt_quote(worker, *adopted, net.now)
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


def _trained_on_tokens(workers: dict[str, Identity]) -> Predictor:
    """`steady` starts slowly and decodes fast, `quick` the reverse, as a token fit learned."""
    predictor = Predictor()
    size = len(b"\x81\xa1n\x00")
    for out in range(0, 1000, 50):
        for name, run_s in (("steady", 2.0 + 0.001 * out), ("quick", 0.1 + 0.01 * out)):
            node = workers[name].node_id
            told = Tokens(10, out)
            predictor.observe(node, None, size, wait_s=0.0, run_s=run_s, now=0.0, tokens=told)
    return predictor


def _placed_in_turn(
    workers: dict[str, Identity],
    found: list[str],
    jobs: list[dict[str, Any]],
) -> list[str]:
    """Paid-only jobs of one task each (`jobs`: JobRun's arguments, `output`: its tokens) run
    one after another, each adopting the quotes the ones before it were given, as the node's
    dispatcher does with its standing quotes; which worker each went to. `found`: the order
    the workers are found (and dialled) in."""
    net = make_net(0, 0)
    me = net.run.identity
    net.workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=3) for i in workers.values()}
    names = {i.node_id: n for n, i in workers.items()}
    ads = [ad(workers[n]) for n in found]
    standing = StandingQuotes()
    placed = []
    for i, job in enumerate(jobs):
        output = job.pop("output", None)
        task = replace(spec(i), tokens=None if output is None else Tokens(10, output))
        run = JobRun(me, f"job{i}", [task], now=net.now, paid_only=True, **job)
        net.run = run
        run.add_workers(ads, net.now)
        standing.adopt(run, net.now)
        net.pump()
        for worker, w in run.workers.items():
            if w.quote is not None:
                standing.keep(run, worker, w.quote)
        [t] = run.tasks.values()
        assert t.state == TaskState.COMPLETED and t.worker is not None
        placed.append(names[t.worker])
    return placed


def test_a_job_adopting_standing_quotes_places_on_the_best_not_the_first_dialled() -> None:
    """Its quotes need no round trip, but the workers' links still come up one by one: the
    task waits for the others (as for quotes) rather than going to the first one up."""
    workers = {"slow": Identity.generate(), "fast": Identity.generate()}
    predictor = Predictor()
    for name, run_s in (("slow", 5.0), ("fast", 0.5)):
        for _ in range(3):
            node = workers[name].node_id
            predictor.observe(node, None, 4, wait_s=0.0, run_s=run_s, now=0.0)
    jobs: list[dict[str, Any]] = [{"mtr": math.inf, "predictor": predictor} for _ in range(2)]
    assert _placed_in_turn(workers, ["slow", "fast"], jobs) == ["fast", "fast"]


def test_an_adopted_quote_is_judged_by_the_tokens_of_the_job_adopting_it() -> None:
    """A short request goes to `quick`; a long one that follows it, adopting the quotes the
    short one was given, must go to `steady`: the run time a quote stands for is the adopting
    task's, not the short request's."""
    workers = {"steady": Identity.generate(), "quick": Identity.generate()}
    predictor = _trained_on_tokens(workers)
    jobs = [
        {"mtr": math.inf, "predictor": predictor, "output": 10},
        {"mtr": math.inf, "predictor": predictor, "output": 1000},
    ]
    assert _placed_in_turn(workers, ["quick", "steady"], jobs) == ["quick", "steady"]


def test_a_standing_quote_does_not_send_the_next_request_to_a_worker_busy_with_the_last() -> None:
    """Two like workers of one slot; the first request's task still runs on one of them. The
    next request, asking quotes afresh, goes to the idle one (the busy one's quote says it
    must wait): so must a request that adopts the quotes the first one was given."""

    def second_placed(adopting: bool) -> tuple[bytes | None, bytes | None]:
        workers = [Identity.generate(), Identity.generate()]
        net = make_net(0, 0)
        net.hold = True  # tasks started stay running
        me = net.run.identity
        net.workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=3) for i in workers}
        predictor = Predictor()
        for i in workers:
            for _ in range(3):
                predictor.observe(i.node_id, None, 4, wait_s=0.0, run_s=2.0, now=0.0)
        # Each has run a task of 2 s before: its quotes tell the wait behind a running one.
        warm = JobRun(me, "warm", [spec(0), spec(1)], mtr=math.inf, now=net.now)
        net.run = warm
        warm.add_workers([ad(i) for i in workers], net.now)
        net.pump()
        net.advance(2.0)
        for wid, peer, task in net.started:
            net.workers[wid].finished(peer, task["id"], {"out": 0}, None, net.now)
        net.started.clear()
        net.pump()
        assert warm.done and {t.worker for t in warm.tasks.values()} == {i.node_id for i in workers}
        standing = StandingQuotes()
        placed, runs = [], []
        for n in range(2):
            run = JobRun(
                me, f"job{n}", [spec(n)], mtr=math.inf, now=net.now, predictor=predictor,
                paid_only=True,
            )  # fmt: skip
            net.run = run
            run.add_workers([ad(i) for i in workers], net.now)
            if adopting:  # (as the node's dispatcher does: its running jobs are the others)
                standing.adopt(run, net.now, runs)
            runs.append(run)
            net.pump()
            net.advance(1.0)  # (the quotes asked for come in, and the round commits)
            for worker, w in run.workers.items():
                if w.quote is not None:
                    standing.keep(run, worker, w.quote)
            [t] = run.tasks.values()
            placed.append(t.worker)
        return placed[0], placed[1]

    first, second = second_placed(adopting=False)
    assert first is not None and second is not None and second != first
    first, second = second_placed(adopting=True)
    assert first is not None and second is not None and second != first
