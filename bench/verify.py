"""Verified results: what replication and adaptive sampling catch, and what they cost.

    python bench/verify.py [--seeds 1,2,3] [--tasks 1000] [--workers 20] [--liars 2]
                           [--lie 0.3] [--pick busiest|random] [--sample 0.1]

What runs. `bench/quality.py`'s virtual clock (`quality.Network`): one `JobRun` and a
`TaskManager` per worker, messages on an event heap, every quote, commitment and receipt signed
and checked. The workers and the arrivals are quality's `Scenario` (speeds and prices spread
over 10×, Poisson arrivals at 80 % of capacity, lognormal sizes), at this smaller scale, the
`cost` strategy at MTR 1.

Tasks. Task i's input is i; its right output is the first 16 hex digits of SHA-256 of i, which
every honest worker returns. `--liars` workers lie on `--lie` of their tasks. Which: with
`--pick busiest` (the default), those that returned the most results in a run where all are
honest (the liars that would do the most harm; the cost strategy gives some workers a few
tasks only); with `--pick random`, drawn by the seed. A liar lies on the tasks whose input's
seeded hash (SHA-256 of the seed, the liar and the input) falls below `--lie`, with a wrong
output of its own: the same liar lies on the same input every time, a copy of it included,
and two liars never agree on a wrong answer (they do not collude).

Runs, on the same workers and tasks for each seed: unverified (the baseline), `replicas: 2,
quorum: 2`, and adaptive sampling (`sample: --sample`).

Measured per run. Wrong results accepted: tasks whose kept result (`JobRun.kept`) is not the
right one; "no result": tasks with none kept. Work: task executions started on workers (copies
and reruns included) and the worker-seconds they took; cost: `JobRun.spent`; each with its
extra over the unverified run of the same seed. Detection of a liar: the results it had
returned when it was first disputed (`WorkerViews.disputed`), "never" if it was not; with how
many of those were lies. Honest disputed: disputes of workers that never lie (should be 0).
Worker-seconds grow faster than executions: a copy goes to another worker than the first,
often a slower one, and a disputed liar is left out for its cool-off (`WorkerViews`), its share
going to others (the liars `--pick busiest` chooses are the fastest workers).

Ends with: verify wrong_accepted_replicas=<n> wrong_accepted_sampled=<n>
extra_work_sampled=<fraction>, each the worst over the seeds (extra work in task executions).
Goals: 0 wrong with replicas; at most 0.5 % of the tasks wrong with sampling, at no more than
15 % extra work.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench.quality, as a script too

from bench.quality import JOB, T0, Network, Scenario, _spec  # noqa: E402
from p2psched.scheduler import run as sd  # noqa: E402
from p2psched.scheduler.lifecycle import TaskState  # noqa: E402
from p2psched.scheduler.strategy import Strategy  # noqa: E402
from p2psched.wire.codec import decode  # noqa: E402
from p2psched.wire.messages import Task  # noqa: E402

MTR = 1.0
REPLICATED = sd.VerifyPolicy(replicas=2, quorum=2)


def right_output(i: int) -> str:
    """What task i's input (i) must give."""
    return hashlib.sha256(b"%d" % i).hexdigest()[:16]


def lies_on(seed: int, liar: int, i: int, rate: float) -> bool:
    """Whether liar number `liar` (its index among the workers) lies on input i."""
    h = hashlib.sha256(f"{seed}/{liar}/{i}".encode()).digest()
    return int.from_bytes(h[:8], "big") < rate * 2**64


def wrong_output(liar: int, i: int) -> str:
    return "x" + hashlib.sha256(f"lie/{liar}/{i}".encode()).hexdigest()[:15]


@dataclass
class Outcome:
    """One run's figures; liars by their index among the workers."""

    name: str
    wrong: int = 0  # tasks whose kept result is wrong
    unsettled: int = 0  # tasks with no result kept
    executions: int = 0  # task runs started on workers, copies and reruns included
    worker_s: float = 0.0
    cost: float = 0.0
    results: dict[int, int] = field(default_factory=dict)  # worker -> results it returned
    lies: dict[int, int] = field(default_factory=dict)  # liar -> wrong results it returned
    caught: dict[int, tuple[int, int]] = field(default_factory=dict)  # liar -> (results, lies)
    honest_disputed: int = 0
    wall_s: float = 0.0


def simulate(
    sc: Scenario,
    liars: set[int],
    lie: float,
    seed: int,
    name: str,
    policy: sd.VerifyPolicy | None,
    *,
    stop_after: int | None = None,
) -> Outcome:
    """One run of every task of `sc` (the unverified baseline when `policy` is None). With
    `stop_after`, the run stops once each liar has been disputed, or has returned more than
    `stop_after` results and was not (what a property test of detection needs); only
    detection is measured then. A run that settles a task more than once, or whose spending
    is not the sum of its completed tasks' receipts, raises."""
    wall = time.perf_counter()
    out = Outcome(name)
    index_of = sc.index_of()
    run = sd.JobRun(
        sc.scheduler,
        JOB,
        [],
        mtr=MTR,
        now=T0 - 1.0,
        strategy=Strategy("cost", seed=seed),
        verify=policy,
        rng=random.Random(f"sample/{seed}"),  # which results are checked: the same every time
    )

    disputed = run.views.disputed

    def on_disputed(worker: bytes, task: str, reason: str, *, now: float) -> None:
        k = index_of[worker]
        if k not in liars:
            out.honest_disputed += 1
        elif k not in out.caught:
            out.caught[k] = (out.results.get(k, 0), out.lies.get(k, 0))
        disputed(worker, task, reason, now=now)

    run.views.disputed = on_disputed  # type: ignore[method-assign]

    def run_time(wid: bytes, task: Task) -> float:
        i: int = decode(bytes(task.input))
        return sc.sizes[i] / sc.speeds[index_of[wid]]

    running: dict[tuple[bytes, str], float] = {}  # (worker, task) -> when it will finish

    def on_start(wid: bytes, task: Task, now: float) -> None:
        out.executions += 1
        out.worker_s += run_time(wid, task)
        running[wid, task.id] = now + run_time(wid, task)

    def on_abort(wid: bytes, task_id: str, now: float) -> None:
        out.worker_s -= max(0.0, running.pop((wid, task_id)) - now)  # it stops there

    def output(wid: bytes, task: Task) -> str:
        i, k = decode(bytes(task.input)), index_of[wid]
        out.results[k] = out.results.get(k, 0) + 1
        if k in liars and lies_on(seed, k, i, lie):
            out.lies[k] = out.lies.get(k, 0) + 1
            return wrong_output(k, i)
        return right_output(i)

    settled: Counter[str] = Counter()
    net = Network(
        run,
        sc.managers(),
        run_time=run_time,
        output=output,
        on_start=on_start,
        on_abort=on_abort,
        on_settled=lambda a, now: settled.update([a.task_id]),
    )

    def enough() -> bool:
        return all(k in out.caught or out.results.get(k, 0) > limit for k in liars)

    limit = math.inf if stop_after is None else stop_after
    net.play(
        sc.ads(),
        [(t, _spec(i)) for i, t in enumerate(sc.arrivals)],
        batch_s=0.1,
        until=enough if stop_after is not None else None,
    )
    out.wall_s = time.perf_counter() - wall
    if stop_after is not None:
        return out
    originals = [sd.task_id_for(JOB, i) for i in range(len(sc.arrivals))]
    if settled != Counter(originals):
        raise AssertionError(f"tasks not settled once each: {(settled - Counter(originals))}")
    for i, tid in enumerate(originals):
        kept = run.kept(tid)
        if kept is None:
            out.unsettled += 1
        elif kept.output != right_output(i):
            out.wrong += 1
    paid = [
        t.receipt.price for t in run.tasks.values() if t.state == TaskState.COMPLETED and t.receipt
    ]
    if not math.isclose(sum(paid), run.spent, rel_tol=1e-9, abs_tol=1e-9):
        raise AssertionError(f"spent {run.spent} but the completed tasks' receipts say {sum(paid)}")
    out.cost = run.spent
    return out


def pick_liars(sc: Scenario, n_liars: int, seed: int, pick: str) -> set[int]:
    """The workers that lie (`--pick`): the busiest in an honest run, or drawn by the seed."""
    if pick == "random":
        return set(random.Random(f"liars/{seed}").sample(range(len(sc.speeds)), n_liars))
    honest = simulate(sc, set(), 0.0, seed, "honest", None)
    return set(sorted(honest.results, key=lambda k: (-honest.results[k], k))[:n_liars])


def extra(x: float, base: float) -> str:
    return f"{(x - base) / base:+.1%}" if base else "-"


def detection(o: Outcome, k: int) -> str:
    if k in o.caught:
        results, lies = o.caught[k]
        return f"{results} ({lies} lies)"
    return f"never ({o.results.get(k, 0)} run)"


def report(liars: list[int], runs: list[Outcome]) -> None:
    base = runs[0]
    head = (
        f"{'run':<14} {'wrong':>5} {'no result':>9} {'executions':>10} {'extra':>7} "
        f"{'worker-s':>9} {'extra':>7} {'cost':>7} {'extra':>7} "
        + " ".join(f"{'liar #' + str(k) + ' caught after':>24}" for k in liars)
        + f" {'honest disputed':>15}"
    )
    print(head)
    for o in runs:
        caught = (
            " ".join(f"{'-':>24}" for _ in liars)
            if o is base
            else " ".join(f"{detection(o, k):>24}" for k in liars)
        )
        print(
            f"{o.name:<14} {o.wrong:>5} {o.unsettled:>9} {o.executions:>10} "
            f"{extra(o.executions, base.executions):>7} {o.worker_s:>9.0f} "
            f"{extra(o.worker_s, base.worker_s):>7} {o.cost:>7.2f} {extra(o.cost, base.cost):>7} "
            f"{caught} {o.honest_disputed:>15}"
        )
    told = ", ".join(f"#{k} {base.results.get(k, 0)} ({base.lies.get(k, 0)} lies)" for k in liars)
    print(f"  liars' results unverified: {told}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated; one run set per seed")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--liars", type=int, default=2)
    ap.add_argument("--lie", type=float, default=0.3, help="the share of its tasks a liar lies on")
    ap.add_argument("--pick", choices=("busiest", "random"), default="busiest")
    ap.add_argument("--sample", type=float, default=0.1, help="the sampled run's `sample`")
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise SystemExit(f"--seeds: {args.seeds!r} is not a list of integers like 1,2,3") from None
    if not seeds:
        raise SystemExit("--seeds: give at least one seed")
    if not 0 <= args.liars <= args.workers or args.workers < 2 or args.tasks < 1:
        raise SystemExit("need --tasks >= 1, --workers >= 2 and 0 <= --liars <= --workers")
    if not 0 <= args.lie <= 1 or not 0 < args.sample <= 1:
        raise SystemExit("need 0 <= --lie <= 1 and 0 < --sample <= 1")
    sampled = sd.VerifyPolicy(sample=args.sample)
    t_start = time.perf_counter()
    print(
        f"scale: {args.tasks:,} tasks, {args.workers} workers (1 slot each), {args.liars} of them "
        f"lying on {args.lie:.0%} of their tasks ({args.pick}); cost strategy, MTR {MTR:g}; "
        f"seeds {args.seeds}"
    )
    worst_replicas = worst_sampled = 0
    worst_extra = -math.inf
    for seed in seeds:
        sc = Scenario.make(args.tasks, args.workers, seed)
        liars = pick_liars(sc, args.liars, seed, args.pick)
        runs = [
            simulate(sc, liars, args.lie, seed, name, policy)
            for name, policy in (
                ("unverified", None),
                ("replicas 2/2", REPLICATED),
                (f"sample {args.sample:g}", sampled),
            )
        ]
        print(f"seed {seed}:")
        report(sorted(liars), runs)
        base, replicated, sampled_run = runs
        worst_replicas = max(worst_replicas, replicated.wrong)
        worst_sampled = max(worst_sampled, sampled_run.wrong)
        worst_extra = max(worst_extra, (sampled_run.executions - base.executions) / base.executions)
        walls = ", ".join(f"{o.name} {o.wall_s:.0f} s" for o in runs)
        print(f"  wall: {walls}", file=sys.stderr)
    print(
        "(wrong: tasks whose kept result is wrong; no result: tasks with none kept; executions: "
        "task runs started on workers, copies and reruns included; extra: over the unverified "
        "run; caught after: the liar's results when it was first disputed, and how many of "
        "them were lies)"
    )
    print(
        f"goals: wrong with replicas 0: {worst_replicas} (worst seed); wrong with sampling "
        f"<= {0.005 * args.tasks:g}: {worst_sampled}; extra work with sampling <= 15 %: "
        f"{worst_extra:.1%}"
    )
    print(f"total {time.perf_counter() - t_start:.0f} s wall")
    print(
        f"verify wrong_accepted_replicas={worst_replicas} wrong_accepted_sampled={worst_sampled} "
        f"extra_work_sampled={worst_extra:.3f}"
    )


if __name__ == "__main__":
    main()
