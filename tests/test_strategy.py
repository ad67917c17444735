"""Each strategy's choice on crafted candidates, and every strategy (late binding through its
own reserve/ready protocol) running whole jobs between the real scheduler and worker cores."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun, Send
from p2psched.scheduler.strategy import STRATEGIES, Candidate, Strategy, check_strategy
from p2psched.worker import manager as wm
from tests.harness.net import (
    Net,
    ad,
    commit,
    dispatch,
    net_with,
    on_wire,
    receipts_verify,
    spec,
    wire,
)

S = TaskState


def cand(
    name: str, price: float, run: float, *, wait: float = 0.0, slots: int = 1, room: int = 8
) -> Candidate:
    return Candidate(worker=name.encode(), price=price, wait=wait, run=run, slots=slots, room=room)


def picks(strategy: Strategy, candidates: list[Candidate], n: int, mtr: float = 1.0) -> list[str]:
    chooser = strategy.chooser(candidates, mtr)
    out = []
    for _ in range(n):
        c = chooser.pick(lambda c: True)
        if c is None:
            break
        chooser.took(c)
        out.append(c.worker.decode())
    return out


def test_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(ValueError) as e:
        check_strategy("fastest")
    for name in STRATEGIES:
        assert name in str(e.value)
    s = Strategy()
    with pytest.raises(ValueError):
        s.set("nope")
    assert s.name == "cost"  # unchanged


def test_cost_at_mtr_zero_takes_the_cheapest_until_its_room_is_gone() -> None:
    cs = [cand("dear-fast", 3.0, 1.0), cand("cheap-slow", 1.0, 10.0, room=2), cand("mid", 2.0, 5.0)]
    assert picks(Strategy("cost"), cs, 4, mtr=0.0) == ["cheap-slow", "cheap-slow", "mid", "mid"]


def test_cost_at_mtr_infinity_takes_the_fastest_counting_its_queue() -> None:
    cs = [cand("fast", 3.0, 1.0), cand("slow", 1.0, 2.5)]
    # fast finishes at 1, 2, 3 ...; slow at 2.5, 5: the third task is done sooner on slow.
    assert picks(Strategy("cost"), cs, 3, mtr=math.inf) == ["fast", "fast", "slow"]


def test_cost_weighs_money_against_time_by_the_mtr() -> None:
    cs = [cand("a", 1.0, 10.0), cand("b", 5.0, 1.0)]
    assert picks(Strategy("cost"), cs, 1, mtr=0.1) == ["a"]  # 1 + 1 < 5 + 0.1
    assert picks(Strategy("cost"), [cand("a", 1.0, 10.0), cand("b", 5.0, 1.0)], 1, mtr=1.0) == ["b"]


def test_cost_skips_a_winner_the_task_may_not_use() -> None:
    cs = [cand("best", 1.0, 1.0), cand("next", 2.0, 1.0), cand("last", 3.0, 1.0)]
    chooser = Strategy("cost").chooser(cs, 0.0)
    c = chooser.pick(lambda c: c.worker != b"best")  # say, the task failed there before
    assert c is not None and c.worker == b"next"


def test_shortest_queue_takes_the_least_expected_wait() -> None:
    cs = [cand("busy", 0.0, 1.0, wait=5.0), cand("idle", 9.0, 1.0), cand("two", 9.0, 1.0, slots=2)]
    # idle and two start at once; two has two slots, so it takes two before it waits.
    assert picks(Strategy("shortest_queue"), cs, 4) == ["idle", "two", "two", "idle"]


def test_round_robin_takes_each_in_turn_by_node_id() -> None:
    s = Strategy("round_robin")
    cs = [cand("c", 1, 1), cand("a", 1, 1), cand("b", 1, 1)]
    assert picks(s, cs, 5) == ["a", "b", "c", "a", "b"]
    # The turn carries over to the next round.
    assert picks(s, [cand("c", 1, 1), cand("a", 1, 1), cand("b", 1, 1)], 2) == ["c", "a"]


def test_weighted_gives_a_worker_twice_as_fast_twice_the_tasks_interleaved() -> None:
    s = Strategy("weighted")
    cs = [cand("fast", 1, 1.0, room=100), cand("slow", 1, 2.0, room=100)]
    got = picks(s, cs, 30)
    assert Counter(got) == {"fast": 20, "slow": 10}
    assert "slow" in got[:3]  # not 20 in a row first


def test_probabilistic_picks_in_proportion_to_speed_and_repeats_with_its_seed() -> None:
    def run(seed: int) -> list[str]:
        cs = [cand("fast", 1, 1.0, room=10_000), cand("slow", 1, 3.0, room=10_000)]
        return picks(Strategy("probabilistic", seed=seed), cs, 4000)

    got = run(7)
    assert got == run(7)
    share = Counter(got)["fast"] / len(got)
    assert 0.72 < share < 0.78  # weights 1 : 1/3 -> 0.75


def test_no_candidate_the_task_accepts_gives_none() -> None:
    for name in STRATEGIES:
        chooser = Strategy(name, seed=1).chooser([cand("a", 1, 1), cand("b", 1, 1)], 1.0)
        assert chooser.pick(lambda c: False) is None


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_completes_a_job_each_task_once(name: str) -> None:
    net = net_with(name, 120, 4)
    net.pump()
    for _ in range(20):
        if net.run.done:
            break
        net.advance(1)
    assert net.run.done and net.run.counts() == {"completed": 120}
    assert sorted(net.settled) == sorted(net.run.tasks)
    receipts_verify(net)
    assert len({t.worker for t in net.run.tasks.values()}) == 4  # all took part


def test_late_binding_reserves_d_places_per_task_and_binds_on_ready() -> None:
    net = net_with("late_binding", 3, 8, slots=1)
    net.hold = True  # tasks start and stay running
    net.pump()
    # Six places asked for three tasks, one or two per worker; each task went to a worker
    # that said it was ready, and the places left over were given up.
    assert {t.state for t in net.run.tasks.values()} == {S.SENT}
    busy = {wid for wid, _, _ in net.started}
    assert len(busy) == 3
    assert net.run._reserved == 0
    for w in net.workers.values():
        assert not w._reserved and not w._pulling  # nothing left held on any worker


def test_late_binding_sends_the_task_to_whoever_is_free_first() -> None:
    net = net_with("late_binding", 4, 2, slots=1)
    net.hold = True
    net.pump()
    running = [wid for wid, _, _ in net.started]
    assert len(running) == 2 and len(set(running)) == 2
    first, peer, task = net.started[0]
    # The first worker finishes: it asks for the next task and gets it; the other is busy.
    net.workers[first].finished(peer, task["id"], "ok", None, net.now)
    net.pump()
    assert [wid for wid, _, _ in net.started[2:]] == [first]


def test_switching_strategy_mid_job_gives_up_reservations_and_finishes() -> None:
    net = net_with("late_binding", 40, 3, slots=1)
    net.hold = True
    net.pump()
    assert net.run._reserved > 0
    net.run.strategy.set("cost")
    net.hold = False
    for wid, peer, task in net.started:
        net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
    net.started = []
    net.pump()
    for _ in range(30):
        if net.run.done:
            break
        net.advance(1)
    assert net.run.done and net.run.counts() == {"completed": 40}
    assert net.run._reserved == 0
    assert all(not w._reserved for w in net.workers.values())


def test_a_ready_for_places_given_up_is_answered_with_unreserve() -> None:
    net = net_with("late_binding", 1, 1, slots=1)
    net.pump()
    assert net.run.done
    wid = next(iter(net.workers))
    net.run.receive(wid, wire({"t": "ready", "rid": 999_999}), net.now)
    out = [a for a in net.run.actions() if isinstance(a, Send)]
    assert out and on_wire(out[-1].message) == {"t": "unreserve", "rid": 999_999}


def test_what_the_node_learned_of_a_worker_outweighs_its_claim() -> None:
    from p2psched.scheduler.predictor import Predictor

    sched = Identity.generate()
    fast, slow = Identity.generate(), Identity.generate()
    predictor = Predictor()
    size = len(b"\x81\xa1n\x00")  # {"n": 0} encoded: the bucket the tasks fall in
    for _ in range(20):  # both claim nothing; this node saw `slow` take 10x as long
        predictor.observe(fast.node_id, None, size, wait_s=0.0, run_s=1.0, now=0.0)
        predictor.observe(slow.node_id, None, size, wait_s=0.0, run_s=10.0, now=0.0)
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=3) for i in (slow, fast)}
    run = JobRun(sched, "job", [spec(0)], mtr=math.inf, now=1000.0, predictor=predictor)
    net = Net(run, workers)
    run.add_workers([ad(slow), ad(fast)], net.now)
    net.pump()
    assert run.done and run.tasks["job-000000"].worker == fast.node_id


def test_a_worker_that_keeps_failing_is_skipped() -> None:
    from p2psched.scheduler.worker_views import WorkerViews

    views = WorkerViews()
    sched = Identity.generate()
    bad, good = Identity.generate(), Identity.generate()
    for i in range(3):
        views.failed(bad.node_id, f"old/{i}", "driver crashed", now=999.0)
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=3) for i in (bad, good)}
    run = JobRun(sched, "job", [spec(k) for k in range(6)], mtr=0.0, now=1000.0, views=views)
    net = Net(run, workers)
    run.add_workers([ad(bad, price=0.0), ad(good, price=5.0)], net.now)  # bad is cheaper
    for _ in range(10):
        net.pump()
        if run.done:
            break
        net.advance(1)
    assert run.done and {t.worker for t in run.tasks.values()} == {good.node_id}


def late_net(
    n_tasks: int, *, slots: int = 1, price: float = 0.0, budget: float = math.inf, **task: object
) -> Net:
    sched, wid = Identity.generate(), Identity.generate()
    workers = {wid.node_id: wm.TaskManager(wid, slots=slots, queue_depth=2, price=price)}
    run = JobRun(
        sched,
        "job",
        [spec(k, **task) for k in range(n_tasks)],  # type: ignore[arg-type]
        mtr=1.0,
        budget=budget,
        now=1000.0,
        strategy=Strategy("late_binding", seed=1),
    )
    net = Net(run, workers)
    a = ad(wid, price)
    run.add_workers([replace(a, profile=replace(a.profile, free_slots=slots))], net.now)
    return net


def test_late_binding_backs_off_a_worker_nothing_queued_may_use() -> None:
    # The only worker failed the task once: it is excluded, and must not be offered places
    # over and over (a loop with no time passing).
    net = late_net(1, retries=3)
    net.hold = True
    net.pump()
    w, peer, task = net.started[0]
    net.workers[w].finished(peer, task["id"], None, "driver crashed", net.now)
    net.pump(rounds=200)  # quiescent: raises if it loops
    assert net.run.tasks["job-000000"].state == S.QUEUED
    # Nor when the budget allows one task at a time on a worker with two slots.
    net = late_net(2, slots=2, price=1.0, budget=1.0)
    net.hold = True
    net.pump(rounds=200)
    assert net.run.counts() == {"sent": 1, "queued": 1}


def test_late_binding_asks_a_big_worker_for_no_more_places_than_it_holds() -> None:
    net = late_net(40, slots=100)
    net.pump()
    for _ in range(5):
        net.advance(1)
    assert net.run.done and net.run.counts() == {"completed": 40}


@pytest.mark.parametrize("mtr", [0.0, 1.0, math.inf])
def test_tasks_waiting_on_a_slow_worker_move_when_a_fast_one_appears(mtr: float) -> None:
    from p2psched.scheduler.predictor import Predictor

    sched, slow, fast = Identity.generate(), Identity.generate(), Identity.generate()
    predictor = Predictor()
    for _ in range(20):  # seen before: slow takes 10 s a task, fast 1 s
        predictor.observe(slow.node_id, None, 4, wait_s=0.0, run_s=10.0, now=0.0)
        predictor.observe(fast.node_id, None, 4, wait_s=0.0, run_s=1.0, now=0.0)
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=4) for i in (slow, fast)}
    run = JobRun(
        sched, "job", [spec(k) for k in range(5)], mtr=mtr, now=1000.0, predictor=predictor
    )
    net = Net(run, workers)
    net.hold = True
    run.add_workers([ad(slow)], net.now)  # only the slow one is known at first
    net.pump()
    assert {t.worker for t in run.tasks.values()} == {slow.node_id}  # 1 runs, 4 wait there
    run.add_workers([ad(fast)], net.now)
    net.advance(4)
    moved = [t for t in run.tasks.values() if t.worker == fast.node_id]
    assert len(moved) >= 3, [(t.state, t.worker == slow.node_id) for t in run.tasks.values()]
    assert all(t.attempts == 0 for t in run.tasks.values())  # a move is nobody's failure
    assert len(net.workers[slow.node_id]._queue) <= 1  # the cancels reached the slow one
    net.hold = False
    for wid, peer, task in net.started:
        if (peer, task["id"]) in net.workers[wid]._held:
            net.workers[wid].finished(peer, task["id"], "ok", None, net.now)
    net.pump()
    for _ in range(20):
        if run.done:
            break
        net.advance(1)
    assert run.done and run.counts() == {"completed": 5}
    assert sorted(net.settled) == sorted(run.tasks)
    # Only tasks that had not started moved: none started twice.
    started = [task["id"] for _, _, task in net.started]
    assert len(started) == len(set(started))


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


def test_mtr_zero_with_a_deadline_takes_the_cheapest_workers_that_make_it() -> None:
    from p2psched.scheduler.predictor import Predictor

    sched, cheap, fast = Identity.generate(), Identity.generate(), Identity.generate()
    predictor = Predictor()
    for _ in range(20):  # seen before: cheap takes 10 s a task, fast 1 s
        predictor.observe(cheap.node_id, None, 4, wait_s=0.0, run_s=10.0, now=0.0)
        predictor.observe(fast.node_id, None, 4, wait_s=0.0, run_s=1.0, now=0.0)
    workers = {
        cheap.node_id: wm.TaskManager(cheap, slots=1, queue_depth=4, price=1.0),
        fast.node_id: wm.TaskManager(fast, slots=1, queue_depth=4, price=5.0),
    }
    run = JobRun(
        sched,
        "job",
        [spec(k) for k in range(6)],
        mtr=0.0,
        now=1000.0,
        # cheap would finish two by then (at 10 s and 20 s, 30 s with the 1.5 margin), not a
        # third (30 s, 45 s with the margin)
        deadline=1031.0,
        predictor=predictor,
    )
    net = Net(run, workers)
    net.hold = True
    run.add_workers([ad(cheap, 1.0), ad(fast, 5.0)], net.now)
    net.pump()
    placed = Counter(t.worker for t in run.tasks.values())
    assert placed == {cheap.node_id: 2, fast.node_id: 4}


def test_mtr_zero_without_a_deadline_waits_for_the_cheapest() -> None:
    sched, cheap, dear = Identity.generate(), Identity.generate(), Identity.generate()
    workers = {
        cheap.node_id: wm.TaskManager(cheap, slots=1, queue_depth=1, price=1.0),
        dear.node_id: wm.TaskManager(dear, slots=4, queue_depth=4, price=1.5),
    }
    run = JobRun(sched, "job", [spec(k) for k in range(6)], mtr=0.0, now=1000.0)
    net = Net(run, workers)
    net.hold = True
    run.add_workers([ad(cheap, 1.0), ad(dear, 1.5)], net.now)
    net.pump()
    # Two fit on the cheap one now; the others wait for it rather than pay 1.5.
    assert Counter(t.worker for t in run.tasks.values()) == {cheap.node_id: 2, None: 4}


def test_mtr_zero_stops_waiting_for_a_cheapest_worker_that_stopped_answering() -> None:
    sched, silent, ok = Identity.generate(), Identity.generate(), Identity.generate()
    workers = {
        silent.node_id: wm.TaskManager(silent, price=0.1),
        ok.node_id: wm.TaskManager(ok, price=0.5),
    }
    run = JobRun(sched, "job", [spec(k) for k in range(3)], mtr=0.0, now=1000.0)
    net = Net(run, workers)
    # The cheap one is connected but never answers a quote request.
    net.behave[silent.node_id] = lambda m: (
        {"t": "beat", "running": [], "progress": []} if m["t"] == "quote" else m
    )
    run.add_workers([ad(silent, 0.1), ad(ok, 0.5)], net.now)
    net.pump()
    net.advance(30, step=1.0)
    assert run.done and run.counts() == {"completed": 3}
    assert {t.worker for t in run.tasks.values()} == {ok.node_id}


def test_a_job_uses_the_nodes_predictor_and_views_even_while_they_are_empty() -> None:
    from p2psched.scheduler.predictor import Predictor
    from p2psched.scheduler.worker_views import WorkerViews

    predictor, views, strategy = Predictor(), WorkerViews(), Strategy()
    assert len(predictor) == 0 and len(views) == 0  # empty: falsy, but still the node's
    run = JobRun(
        Identity.generate(),
        "job",
        [spec(0)],
        mtr=1.0,
        now=0.0,
        strategy=strategy,
        predictor=predictor,
        views=views,
    )
    assert run.predictor is predictor and run.views is views and run.strategy is strategy
