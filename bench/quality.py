"""Scheduling quality: the real scheduler and worker cores on virtual time, against an oracle.

    python bench/quality.py [--tasks 100000] [--workers 1000] [--strategies cost,...]
                            [--mtr 1.0] [--seed 1] [--codec] [--no-lichao]

What runs. One `JobRun` (the scheduler core, `p2psched.scheduler.run`) and one `TaskManager`
per worker (`p2psched.worker.manager`), with no sockets: their actions are carried by an event
heap on a virtual clock. Messages are the cores' typed messages (`wire.messages`); signed
quotes, commitments and receipts are signed and verified for real. `--codec` also passes each
through its wire form, as on a channel: encoded, then `wire.messages.parse` (off by default: it
costs time and changes nothing the cores see). Messages take `LATENCY_S` (1 ms) each way;
opening a channel is instant.

Workers. `--workers` of them, one slot each, the worker's default queue depth. Speed v is
log-uniform over [1, 10] (work units per second). Price per task is 0.01 × 10^(0.7·u + 0.3·u'),
where v = 10^u and u' is an independent uniform: prices spread over 10× (0.01 .. 0.1) and rise
loosely with speed (correlation ≈ 0.9), so the cheapest workers are mostly the slow ones.
Their keys (and the scheduler's) are drawn from the seed too, so a seed's schedule repeats.

Tasks. `--tasks` of them, one long-lived job fed by `JobRun.add_tasks` as each task arrives
(Poisson arrivals). A task's size is lognormal (σ = 0.3, mean 10 work units): its run time on a
worker of speed v is size / v, so about 1 s to 10 s. The size is the noise: the scheduler never
sees it (it learns each worker's mean run time from the worker's quotes, as in a real run); the
oracle knows every size. The arrival rate is 80 % of capacity: 0.8 × Σ v / mean size.

Clock. A tick every `TICK_S` (0.25 s) calls `JobRun.tick` and every worker's `tick` (heartbeats,
lease and quote expiries), rather than running to each core's `next_deadline`, which scans every
worker. Task timeouts are an hour, so nothing times out spuriously; the cores' own quote wait,
quote expiry, silence and retry rules all run as they would on a node.

Measured per strategy. Makespan, from the first arrival to the last completion. Queue wait of a
task: from its arrival until its worker starts it (p50, p99). Total cost: `JobRun.spent`, the sum
of the prices on verified receipts. Decisions per second: tasks placed (moved to negotiating, by
`_assign`) per second of CPU inside `JobRun._commit_round` and `JobRun._on_ready` (late binding),
the methods that place tasks, commitments included: the table gives it with them (each commit
round's commitments made, signed under one Ed25519 signature, journaled and sent: `_sign` and
`_commit`) and without them (-sig, the choice of workers alone); the summary line's
decisions_per_s is with them. Core µs per task: all CPU inside
`JobRun`'s entry points (add_tasks, receive, connected, tick, ...) per task: what one scheduler
pays per task. Every task must complete exactly once, with a receipt: the run is refused (an
exception) if not; in the MTR 0 run, which has a deadline, a task the deadline ends is counted
as late instead (shown, and left out of the cost comparison).

The oracle. It knows every task's arrival and size and every worker's speed, and places each task
at its arrival on the worker where it would finish first (greedy earliest finish time, over true
run times and true queues, one slot per worker, no messages, no quotes): the standard list
scheduling oracle. Makespan ratio = strategy makespan / oracle makespan.

The cost reference. The least cost of a run's tasks, for a schedule that ends when the run had
to: the MTR 0 run by its deadline, the others by their own makespan. Two figures enclose it.
Below, the bound of the earlier tables (`min_cost`): every worker busy at most the horizon in
all, tasks divisible, arrival times ignored; solved exactly by pouring the tasks, smallest
first, into the workers, cheapest first. Above, the reference (`reference`): a real schedule
of the same tasks, one worker each, each worker one task at a time, no task before its
arrival, all done by the horizon, with every size known (no messages, no quotes: an offline
omniscient schedule): the cheapest worker takes as many tasks as it can finish in time (an
exact rule), then the next cheapest, and so on; the schedule is checked before it is used.
At 20,000 tasks on 200 workers the two are within 0.5 % of each other, so the least cost is
known to that: the table gives cost over both (/min, /ref), and the summary line's
cost_over_min_at_mtr0 is the `cost` strategy at MTR = 0 over the reference by its deadline
(the least cost is at most 0.5 % lower: the true ratio is at most that much higher).

The `cost` strategy runs twice: at `--mtr` (default 1 money unit per second, where time
dominates prices of 0.01 .. 0.1: the makespan run) and at MTR = 0 (the cost run). MTR 0 alone
means only the cheapest worker, however long the wait (the design documents' rule), which for
100,000 tasks is one worker for weeks: the cost run is given a deadline of DEADLINE_SLACK (1.5)
oracle makespans after the first arrival, so it takes the cheapest workers expected to make
it, and stays within the deadline. The other
strategies do not read the MTR. best_makespan_over_oracle is the best ratio over all runs (the
table says which). decisions_per_s in the summary is the `cost` strategy's at `--mtr`.

Li-Chao: `bench/lichao.py`'s measurement (envelope query against the linear scan over the same
candidates, every answer checked), at 10,000 and 100,000 candidates, taken before the
simulations (printed after them).

Ends with: quality best_makespan_over_oracle=<x> cost_over_min_at_mtr0=<y> decisions_per_s=<z>
lichao_speedup_100k=<w>
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psched.identity import Identity
from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler import run as sd
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.lichao import Line, LowerEnvelope
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.strategy import STRATEGIES, Strategy
from p2psched.wire.codec import decode
from p2psched.wire.messages import Message, Send, Task, encode, parse
from p2psched.worker import manager as wm

LATENCY_S = 0.001
TICK_S = 0.25
BATCH_S = 0.1
TIMEOUT_S = 3600.0
STUCK_S = 4 * TIMEOUT_S  # a run not done this long after its last arrival is stuck: a bug
MEAN_SIZE = 10.0
SIZE_SIGMA = 0.3
LOAD = 0.8
T0 = 1000.0  # virtual time of the first arrival
DEADLINE_PASSED = "the job's deadline passed before it ran"  # JobRun's reason
DEADLINE_SLACK = 1.5  # the MTR 0 run's deadline, in oracle makespans after the first arrival
JOB = "bench"

# Event kinds, in the heap as (time, seq, kind, a, b).
ARRIVE, TO_WORKER, TO_SCHED, FINISH, TICK, BATCH = range(6)


@dataclass
class Scenario:
    speeds: list[float]
    prices: list[float]
    arrivals: list[float]
    sizes: list[float]
    identities: list[Identity]
    scheduler: Identity

    @classmethod
    def make(cls, n_tasks: int, n_workers: int, seed: int) -> Scenario:
        rng = random.Random(seed)
        speeds, prices = [], []
        for _ in range(n_workers):
            u, u2 = rng.random(), rng.random()
            speeds.append(10**u)
            prices.append(0.01 * 10 ** (0.7 * u + 0.3 * u2))
        mu = math.log(MEAN_SIZE) - SIZE_SIGMA**2 / 2  # so that the mean size is MEAN_SIZE
        sizes = [rng.lognormvariate(mu, SIZE_SIGMA) for _ in range(n_tasks)]
        rate = LOAD * sum(speeds) / (sum(sizes) / n_tasks)  # tasks per second
        arrivals, t = [], T0
        for i in range(n_tasks):
            if i:
                t += rng.expovariate(rate)
            arrivals.append(t)
        identities = [seeded_identity(f"{seed}/worker/{k}") for k in range(n_workers)]
        return cls(speeds, prices, arrivals, sizes, identities, seeded_identity(f"{seed}/sched"))

    def index_of(self) -> dict[bytes, int]:
        """Each worker's index, by its node id."""
        return {ident.node_id: k for k, ident in enumerate(self.identities)}

    def managers(self) -> dict[bytes, wm.TaskManager]:
        """A fresh worker core for each worker: one slot, at its price."""
        return {
            ident.node_id: wm.TaskManager(ident, slots=1, price=price)
            for ident, price in zip(self.identities, self.prices)
        }

    def ads(self) -> list[WorkerAd]:
        return [_ad(i, p) for i, p in zip(self.identities, self.prices)]


def seeded_identity(name: str) -> Identity:
    """A key pair drawn from `name`, so a seed's run is the same every time (ties between
    workers are broken by their ids). The cores on a virtual clock check no id's work
    (channels do): these need none."""
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())
    return Identity.from_private_key(key)


@dataclass
class Result:
    strategy: str
    mtr: float | None
    completed: int
    makespan: float
    waits: list[float]
    cost: float
    placed: int
    decide_s: float
    commit_s: float
    core_s: float
    wall_s: float
    reruns: int
    messages: int
    closed: list[tuple[bytes, str]] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # tasks the deadline ended (deadline run)


def _spec(i: int) -> TaskSpec:
    return TaskSpec(
        task_id=sd.task_id_for(JOB, i),
        index=i,
        name=str(i),
        driver="echo",
        input=i,
        need=Need.parse(""),
        timeout_s=TIMEOUT_S,
        max_price=math.inf,
        retries=2,
        priority=5,
    )


def _ad(identity: Identity, price: float) -> WorkerAd:
    profile = Profile(
        cpu_model="cpu",
        cpu_cores=1,
        ram_gb=8.0,
        min_price=price,
        drivers=("echo",),
        free_slots=1,
        addresses=("127.0.0.1:1",),
    )
    return WorkerAd(identity.node_id, profile, seq=1, expires=1e12)


class _Timer:
    """Wraps bound methods of one object with perf_counter accumulators."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, obj: Any, name: str, bucket: str) -> None:
        method = getattr(obj, name)
        self.seconds.setdefault(bucket, 0.0)
        self.calls.setdefault(bucket, 0)
        seconds, calls, clock = self.seconds, self.calls, time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[bucket] += clock() - start
                calls[bucket] += 1

        setattr(obj, name, timed)


class Network:
    """One `JobRun` and its workers' `TaskManager`s on an event heap of virtual time: each
    message takes LATENCY_S, a channel opens at once, a worker's started task finishes
    `run_time(worker, task)` later with `output(worker, task)`; the run and every worker tick
    each TICK_S. `play` hands the run its tasks as they arrive and goes on until the run is
    done with all of them. `on_start`, `on_abort` and `on_settled` let a benchmark watch."""

    def __init__(
        self,
        run: sd.JobRun,
        workers: dict[bytes, wm.TaskManager],
        *,
        run_time: Callable[[bytes, Task], float],
        output: Callable[[bytes, Task], Any] = lambda _worker, task: decode(bytes(task.input)),
        codec: bool = False,
        on_start: Callable[[bytes, Task, float], None] | None = None,
        on_abort: Callable[[bytes, str, float], None] | None = None,
        on_settled: Callable[[sd.Settled, float], None] | None = None,
    ) -> None:
        self.run, self.workers = run, workers
        self.run_time, self.output = run_time, output
        self.on_start, self.on_abort, self.on_settled = on_start, on_abort, on_settled
        self.wire: Callable[[Message], Message] = (
            (lambda m: parse(encode(m))) if codec else (lambda m: m)
        )
        self.heap: list[tuple[float, int, int, Any, Any]] = []
        self.seq = 0
        self.messages = 0
        self.closed: list[tuple[bytes, str]] = []

    def push(self, t: float, kind: int, a: Any = None, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, a, b))

    def drain_worker(self, wid: bytes, w: wm.TaskManager, now: float) -> None:
        for b in w.actions():
            if isinstance(b, Send):
                self.messages += 1
                self.push(now + LATENCY_S, TO_SCHED, wid, self.wire(b.message))
            elif isinstance(b, wm.Start):
                if self.on_start is not None:
                    self.on_start(wid, b.task, now)
                self.push(now + self.run_time(wid, b.task), FINISH, wid, b.task)
            elif isinstance(b, wm.Abort) and self.on_abort is not None:
                # (the task's FINISH event still comes, and `finished` drops it)
                self.on_abort(wid, b.task_id, now)

    def drain(self, now: float) -> None:
        me, run = self.run.identity, self.run
        while True:
            acts = run.actions()
            if not acts:
                return
            for a in acts:
                if isinstance(a, Send):
                    self.messages += 1
                    self.push(now + LATENCY_S, TO_WORKER, a.peer, self.wire(a.message))
                elif isinstance(a, sd.Connect):
                    w = self.workers[a.worker]
                    w.connected(me.node_id, me.public_key, now)
                    run.connected(a.worker, w.identity.public_key, now)
                    self.drain_worker(a.worker, w, now)
                elif isinstance(a, sd.Settled):
                    if self.on_settled is not None:
                        self.on_settled(a, now)
                elif isinstance(a, sd.Close):
                    self.closed.append((a.worker, a.reason))
                    self.workers[a.worker].disconnected(me.node_id, now)
                # Discover: every worker is known from the start.

    def play(
        self,
        ads: list[WorkerAd],
        arrivals: list[tuple[float, TaskSpec]],
        *,
        batch_s: float,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """The run finds `ads` a second before the first arrival; then each task of
        `arrivals` (time, task; in time order) is handed over as it arrives, or with the
        others of its `batch_s` window; until the run is done with every one, or `until`
        says so at a tick."""
        run, me = self.run, self.run.identity.node_id
        t0, last = arrivals[0][0], arrivals[-1][0]
        now = t0 - 1.0
        run.add_workers(ads, now)
        self.drain(now)
        for t, task in arrivals:
            self.push(t, ARRIVE, task)
        self.push(t0, TICK)
        if batch_s > 0:
            self.push(t0, BATCH)
        arrived: list[TaskSpec] = []
        handed = 0
        while self.heap:
            now, _, kind, a, b = heapq.heappop(self.heap)
            if kind == TO_SCHED:
                run.receive(a, b, now)
            elif kind == TO_WORKER:
                w = self.workers[a]
                w.receive(me, b, now)
                self.drain_worker(a, w, now)
            elif kind == FINISH:
                w = self.workers[a]
                w.finished(me, b.id, self.output(a, b), None, now)
                self.drain_worker(a, w, now)
            elif kind == ARRIVE:
                if batch_s > 0:
                    arrived.append(a)
                else:
                    run.add_tasks([a], now)
                    handed += 1
            elif kind == BATCH:
                if arrived:
                    run.add_tasks(arrived, now)
                    handed += len(arrived)
                    arrived = []
                if now < last:
                    self.push(now + batch_s, BATCH)
            else:  # TICK
                if until is not None and until():
                    return
                run.tick(now)
                for wid, w in self.workers.items():
                    w.tick(now)
                    self.drain_worker(wid, w, now)
                if not (run.done and handed == len(arrivals)):
                    if now > last + STUCK_S:
                        states = Counter(t.state.value for t in run.tasks.values())
                        raise AssertionError(
                            f"not done {STUCK_S:g} s after the last arrival: {states}"
                        )
                    self.push(now + TICK_S, TICK)
            self.drain(now)


def task_index(task_id: str) -> int:
    """The index of a task of JOB (`sd.task_id_for`)."""
    return int(task_id.rpartition("/")[2])


def simulate(
    sc: Scenario,
    strategy: str,
    mtr: float,
    *,
    codec: bool,
    seed: int,
    batch_s: float,
    deadline: float | None = None,
) -> Result:
    n = len(sc.arrivals)
    wall = time.perf_counter()
    index_of, workers = sc.index_of(), sc.managers()
    run = sd.JobRun(
        sc.scheduler,
        JOB,
        [],
        mtr=mtr,
        now=T0 - 1.0,
        strategy=Strategy(strategy, seed=seed),
        deadline=deadline,
    )
    timer = _Timer()
    for name in ("add_tasks", "add_workers", "connected", "disconnected", "receive", "tick"):
        timer.wrap(run, name, "core")
    timer.wrap(run, "_commit_round", "decide")
    timer.wrap(run, "_on_ready", "decide")
    timer.wrap(run, "_commit", "commit")
    timer.wrap(run, "_sign", "commit")
    timer.wrap(run, "_assign", "assign")

    started = [math.nan] * n
    finished = [math.nan] * n
    late: list[int] = []  # the deadline run: tasks ended by the deadline
    starts = [0] * n
    settled = [0] * n

    def run_time(wid: bytes, task: Task) -> float:
        return sc.sizes[task_index(task.id)] / sc.speeds[index_of[wid]]

    def on_start(wid: bytes, task: Task, now: float) -> None:
        i = task_index(task.id)
        started[i] = now
        starts[i] += 1

    def on_settled(a: sd.Settled, now: float) -> None:
        i = task_index(a.task_id)
        settled[i] += 1
        t = run.tasks[a.task_id]
        if deadline is not None and t.error == DEADLINE_PASSED:
            late.append(i)  # the deadline run: a task not done in time, counted
            return
        if t.state != TaskState.COMPLETED:
            raise AssertionError(f"{a.task_id} ended {t.state.value}: {t.error}")
        finished[i] = now

    net = Network(
        run, workers, run_time=run_time, codec=codec, on_start=on_start, on_settled=on_settled
    )
    net.play(
        sc.ads(),
        [(t, _spec(i)) for i, t in enumerate(sc.arrivals)],
        batch_s=batch_s,
    )

    # Every task completed exactly once, with a receipt, and was paid for once.
    bad = [i for i in range(n) if settled[i] != 1]
    if bad or not run.done or len(run.tasks) != n:
        raise AssertionError(f"{len(bad)} tasks not settled exactly once, e.g. {bad[:5]}")
    missed = set(late)
    for task in run.tasks.values():
        if task.spec.index in missed:
            continue
        if task.state != TaskState.COMPLETED or task.receipt is None:
            raise AssertionError(f"{task.spec.task_id}: {task.state.value}")
    paid = sum(task.receipt.price for task in run.tasks.values() if task.receipt is not None)
    if not math.isclose(paid, run.spent, rel_tol=1e-9, abs_tol=1e-9):
        raise AssertionError(f"spent {run.spent} but receipts say {paid}")
    waits = sorted(s - a for s, a in zip(started, sc.arrivals) if not math.isnan(s))
    return Result(
        strategy=strategy,
        mtr=mtr,
        completed=sum(settled) - len(late),
        makespan=max(f for f in finished if not math.isnan(f)) - sc.arrivals[0],
        waits=waits,
        cost=run.spent,
        placed=timer.calls["assign"],
        decide_s=timer.seconds["decide"],
        commit_s=timer.seconds["commit"],
        core_s=timer.seconds["core"],
        wall_s=time.perf_counter() - wall,
        reruns=sum(starts) - n,
        messages=net.messages,
        closed=net.closed,
        late=late,
    )


def oracle(sc: Scenario) -> tuple[float, list[float]]:
    """Greedy earliest finish time with true run times: (makespan, sorted queue waits).

    A worker idle at a task's arrival would finish it at arrival + size / v: of those, the
    fastest wins. A busy one, free at f, would finish it at f + size / v: a line in size, so the
    best busy worker is a lower-envelope query (price = f, time = 1 / v, MTR = size)."""
    idle = [(-v, k) for k, v in enumerate(sc.speeds)]  # fastest first
    heapq.heapify(idle)
    free_at = [-math.inf] * len(sc.speeds)
    busy: list[tuple[float, int]] = []  # (free at, worker); stale once free_at moved on
    envelope = LowerEnvelope()
    waits, last = [], 0.0
    for a, size in zip(sc.arrivals, sc.sizes):
        while busy and busy[0][0] <= a:
            f, k = heapq.heappop(busy)
            if free_at[k] == f:
                envelope.remove(k)
                heapq.heappush(idle, (-sc.speeds[k], k))
        best_idle = a + size / -idle[0][0] if idle else math.inf
        line = envelope.best(size)
        best_busy = line.price + size * line.time if line is not None else math.inf
        if best_idle <= best_busy:
            _, k = heapq.heappop(idle)
            start, end = a, best_idle
        else:
            assert line is not None
            k = int(line.key)  # type: ignore[call-overload]
            start, end = line.price, best_busy
        free_at[k] = end
        envelope.add(Line(end, 1.0 / sc.speeds[k], k))  # replaces its line, if it had one
        heapq.heappush(busy, (end, k))
        waits.append(start - a)
        last = max(last, end)
    return last - sc.arrivals[0], sorted(waits)


def min_cost(sc: Scenario, horizon: float, skip: frozenset[int] = frozenset()) -> float:
    """The least cost of putting every task on a worker with each worker busy at most
    `horizon`, tasks divisible (the linear relaxation, a lower bound on the integral problem).

    Optimal: pour the tasks, smallest first, into the workers, cheapest first, each holding
    horizon × v work units. (1) If a cheaper worker had spare room while a dearer one held work,
    moving that work over costs less. (2) If a cheaper worker c held a piece of a larger task L
    while a dearer e held a piece of a smaller task s, swapping ε work units of each leaves both
    loads as they are and changes the cost by ε (p_e - p_c)(1/size_L - 1/size_s) < 0. So an
    optimum fills the cheapest workers first, with the smallest tasks: the pour."""
    order = sorted(range(len(sc.speeds)), key=lambda k: sc.prices[k])
    caps = [(sc.prices[k], horizon * sc.speeds[k]) for k in order]
    cost, j, room = 0.0, 0, caps[0][1]
    for size in sorted(x for i, x in enumerate(sc.sizes) if i not in skip):
        left = size
        while left > 1e-12:
            if j >= len(caps):
                raise ValueError("infeasible: the workers cannot do all this work by the horizon")
            take = min(left, room)
            cost += caps[j][0] * take / size
            left -= take
            room -= take
            if room <= 1e-12:
                j += 1
                room = caps[j][1] if j < len(caps) else 0.0
    return cost


def reference(
    sc: Scenario, horizon: float, skip: frozenset[int] = frozenset()
) -> tuple[float, list[int]]:
    """A feasible schedule with every task (but `skip`) done `horizon` seconds after the first
    arrival, knowing every size and arrival, and cheap: (its cost, the worker of each task; -1
    for those skipped).

    Feasible means what the simulation's workers could do: each worker runs one task at a
    time, a task no earlier than its arrival, to its end. One worker can finish a set of tasks
    by `horizon` if and only if, for every arrival time a among them, the tasks arriving at or
    after a fit between a and the horizon (run in arrival order, its last busy stretch starts
    at some arrival a and runs those tasks back to back; `_fits_by` checks it).

    Cheap, because a task costs its worker's price whatever its size: the cheapest worker
    first takes as many of the tasks as it can finish by the horizon, then the next
    cheapest of the tasks left, and so on. "As many as it can" is exact: backwards in time
    (latest arrival first), each task is added, and while the tasks arriving at or after it
    do not fit, the largest so far is dropped (Moore and Hodgson's rule with time reversed:
    arrivals become due dates). This fills the cheap workers with the smallest tasks, as the
    relaxation's optimum does (`min_cost`), within the arrival times. It is a schedule, not
    a bound: the least cost lies between `min_cost` and this. Raises ValueError if the
    workers, so filled, leave tasks over."""
    arrivals, sizes = sc.arrivals, sc.sizes
    end = arrivals[0] + horizon
    left = [i for i in sorted(range(len(sizes)), key=lambda i: -arrivals[i]) if i not in skip]
    worker_of = [-1] * len(sizes)
    cost = 0.0
    for k in sorted(range(len(sc.speeds)), key=lambda k: (sc.prices[k], k)):
        if not left:
            break
        v = sc.speeds[k]
        kept: list[tuple[float, int]] = []  # max-heap by run time: (-run time, task)
        load = 0.0
        for i in left:  # latest arrival first
            run = sizes[i] / v
            heapq.heappush(kept, (-run, i))
            load += run
            if arrivals[i] + load > end:
                load += heapq.heappop(kept)[0]  # the largest so far goes
        for _, i in kept:
            worker_of[i] = k
        cost += sc.prices[k] * len(kept)
        if kept:
            left = [i for i in left if worker_of[i] < 0]
    if left:
        raise ValueError(f"no schedule found: {len(left)} tasks left over at the horizon")
    # It is checked as a schedule: each worker's tasks, run in arrival order, end in time.
    ends: dict[int, float] = {}
    for i in sorted(range(len(sizes)), key=arrivals.__getitem__):
        k = worker_of[i]
        if k >= 0:
            ends[k] = max(ends.get(k, -math.inf), arrivals[i]) + sizes[i] / sc.speeds[k]
    if any(t > end + 1e-9 for t in ends.values()):
        raise AssertionError("the reference schedule ends after its horizon")
    return cost, worker_of


def _horizon(r: Result, deadline: float) -> float:
    """How long after the first arrival the reference for `r` must be done: by the MTR 0
    run's deadline (what that run was asked to meet), else by that run's makespan."""
    return deadline - T0 if r.mtr == 0.0 and r.strategy == "cost" else r.makespan


def _reference_cost(sc: Scenario, horizon: float, skip: frozenset[int]) -> float:
    """`reference`'s cost, NaN when it finds no schedule by then."""
    try:
        return reference(sc, horizon, skip)[0]
    except ValueError:
        return math.nan


def pct(sorted_values: list[float], p: float) -> float:
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def lichao_rows(seed: int) -> tuple[list[str], float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import lichao  # bench/lichao.py

    args = argparse.Namespace(queries=10_000, linear_queries=300, churn=2_000, seed=seed)
    rng = random.Random(seed)
    rows, speedup = [], 0.0
    for n in (10_000, 100_000):
        speedup, row = lichao.run(n, args, rng)
        rows.append(row)
    return rows, speedup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=1_000)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--mtr", type=float, default=1.0, help="the cost strategy's makespan run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--codec", action="store_true", help="messages through the codec as well")
    ap.add_argument("--no-lichao", action="store_true")
    ap.add_argument(
        "--batch-s",
        type=float,
        default=BATCH_S,
        help="hand the tasks that arrived in this window to the scheduler at once (0: each alone)",
    )
    args = ap.parse_args()
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES:
            raise SystemExit(f"no strategy {s!r}; the strategies are {', '.join(STRATEGIES)}")
    t_start = time.perf_counter()

    sc = Scenario.make(args.tasks, args.workers, args.seed)
    span = sc.arrivals[-1] - sc.arrivals[0]
    print(
        f"scale: {args.tasks:,} tasks, {args.workers:,} workers (1 slot each), arrivals at "
        f"{LOAD:.0%} of capacity over {span:.0f} s virtual; seed {args.seed}; "
        f"codec round trip {'on' if args.codec else 'off'}"
    )
    # Li-Chao first, in a fresh process: after the simulations the scan's allocations pay for
    # collecting a heap of long-lived objects, which would flatter the envelope.
    rows, speedup = lichao_rows(args.seed) if not args.no_lichao else ([], math.nan)
    o_makespan, o_waits = oracle(sc)

    runs: list[tuple[str, float]] = [(s, args.mtr) for s in strategies]
    if "cost" in strategies:
        runs.insert(strategies.index("cost") + 1, ("cost", 0.0))
    results = []
    # MTR 0 alone means the cheapest worker only, however long it takes: with 100,000 tasks
    # that is one worker for weeks. The MTR 0 run has a deadline instead, DEADLINE_SLACK x the
    # oracle's makespan after the first arrival: the cheapest workers expected to make it.
    deadline = T0 + DEADLINE_SLACK * o_makespan
    for name, mtr in runs:
        r = simulate(
            sc,
            name,
            mtr,
            codec=args.codec,
            seed=args.seed,
            batch_s=args.batch_s,
            deadline=deadline if mtr == 0.0 else None,
        )
        results.append(r)
        print(f"  ran {name} (MTR {mtr:g}) in {r.wall_s:.0f} s wall", file=sys.stderr)

    head = (
        f"{'strategy':<15} {'MTR':>4} {'done':>7} {'makespan':>9} {'/oracle':>8} "
        f"{'wait p50':>9} {'wait p99':>9} {'cost':>9} {'/min':>6} {'/ref':>6} {'dec/s':>8} "
        f"{'dec/s -sig':>10} {'core µs/t':>9} {'reruns':>6} {'wall s':>7}"
    )
    print(head)
    print(
        f"{'oracle (EFT)':<15} {'':>4} {args.tasks:>7} {o_makespan:>9.1f} {1:>8.3f} "
        f"{pct(o_waits, 50):>9.2f} {pct(o_waits, 99):>9.2f}"
    )
    refs: dict[int, float] = {}  # id(result) -> the reference's cost at its horizon
    for r in results:
        mins = min_cost(sc, r.makespan, frozenset(r.late))
        refs[id(r)] = ref = _reference_cost(sc, _horizon(r, deadline), frozenset(r.late))
        rate = r.placed / r.decide_s if r.decide_s else math.inf
        rate_nosig = r.placed / max(1e-12, r.decide_s - r.commit_s)
        shown_mtr = f"{r.mtr:g}" if r.strategy == "cost" else "-"
        print(
            f"{r.strategy:<15} {shown_mtr:>4} {r.completed:>7} {r.makespan:>9.1f} "
            f"{r.makespan / o_makespan:>8.3f} {pct(r.waits, 50):>9.2f} {pct(r.waits, 99):>9.2f} "
            f"{r.cost:>9.2f} {r.cost / mins:>6.3f} {r.cost / ref:>6.3f} {rate:>8,.0f} "
            f"{rate_nosig:>10,.0f} {r.core_s / args.tasks * 1e6:>9.0f} {r.reruns:>6} "
            f"{r.wall_s:>7.0f}"
        )
        if r.late:
            print(f"    {len(r.late)} tasks not done by the deadline (ended, unpaid, out of /min)")
        if r.closed:
            print(f"    {len(r.closed)} channels closed, e.g. {r.closed[0][1]}")
    print(
        "(makespan from the first arrival to the last completion; wait = start - arrival, s; "
        "/min = cost over the relaxation's bound at that run's makespan (tasks divisible, "
        "arrivals ignored); /ref = cost over the reference schedule (arrivals and run times "
        "kept) finishing by that run's makespan, or the MTR 0 run's deadline; dec/s = tasks "
        "placed per CPU second in _commit_round/_on_ready, '-sig' without making, signing and "
        "sending the commitments)"
    )

    best = min(results, key=lambda r: r.makespan)
    cost0 = next((r for r in results if r.strategy == "cost" and r.mtr == 0.0), None)
    main_cost = next((r for r in results if r.strategy == "cost" and r.mtr == args.mtr), None)
    label = f"{best.strategy} (MTR {best.mtr:g})" if best.strategy == "cost" else best.strategy
    print(f"best makespan: {label}, {best.makespan / o_makespan:.3f} x the oracle's")
    cost_ratio = math.nan
    if cost0 is not None:
        skip = frozenset(cost0.late)
        least = min_cost(sc, cost0.makespan, skip)
        by_makespan = _reference_cost(sc, cost0.makespan, skip)
        ref = refs[id(cost0)]  # at the deadline
        cost_ratio = cost0.cost / ref
        print(
            f"cost at MTR 0 (deadline {DEADLINE_SLACK:g} x the oracle's makespan, "
            f"{deadline - T0:.1f} s): paid {cost0.cost:.2f}; the reference schedule costs "
            f"{ref:.2f} by the deadline (the least possible is at least "
            f"{min_cost(sc, deadline - T0, skip):.2f}), {by_makespan:.2f} by that run's "
            f"makespan of {cost0.makespan:.1f} s (earlier bound: {least:.2f}, "
            f"{cost0.cost / least:.3f} x)"
        )
    # A decision is the choice of a worker and the signed commitment that carries it (one
    # Ed25519 signature a commit round, over all of its commitments).
    rate = main_cost.placed / main_cost.decide_s if main_cost else math.nan
    if main_cost is not None:
        print(
            f"decisions_per_s below: the cost strategy at MTR {args.mtr:g}, with the "
            "commitments made and signed (dec/s)"
        )
    if not args.no_lichao:
        print(
            f"{'Li-Chao N':>9} {'build ms':>10} {'envelope µs':>12} {'linear µs':>12} "
            f"{'speedup':>10} {'churn µs':>10}"
        )
        for row in rows:
            print(f" {row}")
    print(f"total {time.perf_counter() - t_start:.0f} s wall")
    print(
        f"quality best_makespan_over_oracle={best.makespan / o_makespan:.3f} "
        f"cost_over_min_at_mtr0={cost_ratio:.3f} decisions_per_s={rate:.0f} "
        f"lichao_speedup_100k={speedup:.0f}"
    )


if __name__ == "__main__":
    main()
