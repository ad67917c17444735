"""`bench/quality.py`'s cost reference: a real schedule (each worker one task at a time, none
before its arrival, all done by the horizon), checked here from scratch; never below the
relaxation's bound; on the cheapest worker exactly as many tasks as can be done there (against
every subset); and a horizon too short for any schedule refused, not met with a wrong one."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from bench.quality import Scenario, min_cost, oracle, reference


def ends_by(sc: Scenario, placed: dict[int, int], horizon: float) -> bool:
    """Whether every worker, running its tasks (`placed`: task -> worker) in arrival order, is
    done `horizon` after the first arrival."""
    free: dict[int, float] = {}
    for i in sorted(placed, key=lambda i: sc.arrivals[i]):
        k = placed[i]
        free[k] = max(free.get(k, -math.inf), sc.arrivals[i]) + sc.sizes[i] / sc.speeds[k]
    return all(t <= sc.arrivals[0] + horizon + 1e-9 for t in free.values())


def test_the_reference_is_a_schedule_that_ends_in_time_and_costs_what_it_says() -> None:
    sc = Scenario.make(300, 12, seed=4)
    horizon = 1.2 * oracle(sc)[0]
    cost, worker_of = reference(sc, horizon)
    assert all(0 <= k < 12 for k in worker_of)
    assert ends_by(sc, dict(enumerate(worker_of)), horizon)
    assert cost == pytest.approx(sum(sc.prices[k] for k in worker_of))
    assert min_cost(sc, horizon) <= cost + 1e-9
    # the tasks the run left undone are left out of it
    cost_less, skipped = reference(sc, horizon, frozenset({0, 5}))
    assert skipped[0] == skipped[5] == -1 and cost_less < cost


def test_the_cheapest_worker_takes_as_many_tasks_as_any_subset_it_could_finish() -> None:
    sc = Scenario.make(9, 2, seed=2)
    sc = replace(sc, speeds=[1.0, 100.0], prices=[0.01, 0.1])  # cheap and slow, dear and fast
    horizon = 0.6 * sum(sc.sizes)  # the slow one can do part of the work, not all
    _, worker_of = reference(sc, horizon)
    assert ends_by(sc, dict(enumerate(worker_of)), horizon)
    tasks = range(len(sc.sizes))
    most = max(
        n
        for n in range(len(tasks) + 1)
        for subset in itertools.combinations(tasks, n)
        if ends_by(sc, dict.fromkeys(subset, 0), horizon)
    )
    assert 0 < worker_of.count(0) == most < len(sc.sizes)


def test_a_horizon_no_schedule_can_meet_is_refused() -> None:
    sc = Scenario.make(50, 3, seed=1)
    with pytest.raises(ValueError, match="tasks left over"):
        reference(sc, 0.1 * oracle(sc)[0])
