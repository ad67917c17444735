"""Each strategy's choice on crafted candidates, and every strategy running a whole job
between the real scheduler and worker cores. (Late binding's own protocol:
run/test_late.py.)"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from p2psched.scheduler.strategy import STRATEGIES, Candidate, Strategy, check_strategy
from tests.harness.net import net_with, receipts_verify


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


def test_an_unknown_strategy_is_named_in_a_bounded_message() -> None:
    # /scheduler/set, open to any local user without the token, answered a 50 MB name with a
    # 50 MB message: the name is quoted whole.
    with pytest.raises(ValueError) as refused:
        check_strategy("a" * 100_000)
    assert "cost" in str(refused.value) and len(str(refused.value)) < 1000
