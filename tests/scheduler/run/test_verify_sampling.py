"""Adaptive sampling (`verify: sample: 0.1`) catches a liar early and never blames the honest:
for each of 200 fixed seeds, a worker returning a wrong result for 30 % of its tasks is
disputed within 50 of its tasks, and no honest worker is disputed. Each seed is one job on
`bench/quality.py`'s virtual clock (the real scheduler and worker cores, signed deals), run by
`bench/verify.py` until the liar is caught or has returned more than 50 results; so it is
deterministic: a seed that fails, fails every time."""

from __future__ import annotations

from dataclasses import replace

from bench.quality import Scenario
from bench.verify import simulate
from p2psched.scheduler.run import VerifyPolicy

SEEDS = range(200)
WORKERS = 3  # one of them the liar: about a third of the tasks, before the copies
TASKS = 300  # enough for the liar to return more than WITHIN results if it is never caught
LIE = 0.3
WITHIN = 50


def equal_workers(sc: Scenario) -> Scenario:
    """`sc` with every worker as fast and as dear as the others (their mean): so the liar gets
    its share of the tasks, whichever worker it is, and the load stays as `sc` made it."""
    n = len(sc.speeds)
    return replace(sc, speeds=[sum(sc.speeds) / n] * n, prices=[sum(sc.prices) / n] * n)


def test_a_liar_is_caught_within_50_of_its_tasks_and_no_honest_worker_is_disputed() -> None:
    policy = VerifyPolicy(sample=0.1)
    late, blamed, caught_after = [], [], []
    for seed in SEEDS:
        sc = equal_workers(Scenario.make(TASKS, WORKERS, seed))
        liar = seed % WORKERS
        o = simulate(sc, {liar}, LIE, seed, "sampled", policy, stop_after=WITHIN)
        if o.honest_disputed:
            blamed.append(f"seed {seed}: {o.honest_disputed} disputes of honest workers")
        if liar in o.caught:
            results, lies = o.caught[liar]
            caught_after.append(results)
            if results > WITHIN:
                late.append(f"seed {seed}: caught after {results} results ({lies} lies)")
        else:
            ran = o.results.get(liar, 0)
            # A run too short to tell would pass for nothing: it must have gone past WITHIN.
            assert ran > WITHIN, f"seed {seed}: the liar returned only {ran} results"
            late.append(f"seed {seed}: not caught in {ran} results ({o.lies.get(liar, 0)} lies)")
    assert not blamed, blamed
    assert not late, f"{len(late)} of {len(SEEDS)} seeds: " + "; ".join(late[:10])
    assert len(caught_after) == len(SEEDS)
