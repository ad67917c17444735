"""Dispatch throughput and makespan: p2psched against Dask distributed, same machine, same run.

p2psched: a devnet (gate + 4 worker processes, one slot each) on loopback, and a scheduler
node in this process that submits the job through the DHT and the Noise channels, exactly as
`p2psched submit` does. Dask: `LocalCluster` with 4 worker processes, one thread each.

    python bench/dispatch.py [--noop 10000] [--sleep 2000] [--sleep-s 0.01] [--profile 2000]

Then a per-task CPU table: where a no-op task's CPU microseconds go, stage by stage, on the
scheduler's side and on the workers' (all four added up), from a separate run of `--profile`
tasks on a devnet whose processes time their stages (`P2PSCHED_PROFILE`, see
p2psched/node/profiling.py; its clock adds about a microsecond per stage timed). 0 skips it.

Ends with: dispatch noop_tasks_per_s_ratio=<p2psched/dask> sleep_makespan_over_ideal=<x>
dask_sleep_makespan_over_ideal=<y>
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from p2psched import devnet
from p2psched.identity import Identity
from p2psched.node.node import open_node
from p2psched.node.profiling import PROFILE_ENV
from p2psched.scheduler.job import parse_job

WORKERS = 4


def p2psched_run(
    gate: str, doc: dict[str, Any], mark: Callable[[], None] = lambda: None
) -> tuple[float, dict[str, int]]:
    """Seconds from submission until every task is final; and the tasks' final states, with
    "receipts" and "signatures": how many receipts came, under how many signatures. `mark`
    is called just before the submission and once every task is final."""
    host, _, port = gate.rpartition(":")
    out: dict[str, Any] = {}

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with open_node(
                Identity.generate(), Path(tmp), seeds=[(host, int(port))], dht_client=True
            ) as node:
                spec = parse_job(doc)
                mark()
                t0 = time.perf_counter()
                job = node.jobs.submit(spec)
                await job.done.wait()
                out["seconds"] = time.perf_counter() - t0
                mark()
                out["counts"] = dict(job.run.counts())
                receipts = [t.receipt for t in job.run.tasks.values() if t.receipt is not None]
                out["counts"]["receipts"] = len(receipts)
                out["counts"]["signatures"] = len({(r.worker, r.sig) for r in receipts})

    trio.run(main)
    return out["seconds"], out["counts"]


def noop_job(n: int) -> dict[str, Any]:
    return {
        "name": "noop",
        "driver": "echo",
        "template": {"input": "{i}"},
        "matrix": {"i": list(range(n))},
    }


def sleep_job(n: int, seconds: float) -> dict[str, Any]:
    return {
        "name": "sleep",
        "driver": "sleep",
        "template": {"input": {"seconds": seconds}},
        "matrix": {"i": list(range(n))},
    }


def noop(x: int) -> int:
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def dask_runs(n_noop: int, n_sleep: int, sleep_s: float) -> tuple[float, float]:
    from distributed import Client, LocalCluster, wait

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with (
            LocalCluster(
                n_workers=WORKERS,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            ) as cluster,
            Client(cluster) as client,
        ):
            client.submit(noop, -1).result()  # workers warm
            t0 = time.perf_counter()
            wait(client.map(noop, range(n_noop), pure=False))
            noop_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            wait(client.map(nap, [sleep_s] * n_sleep, pure=False))
            sleep_makespan = time.perf_counter() - t0
    return noop_s, sleep_makespan


# The table's rows: a name, and the stages (`p2psched.node.profiling.STAGES`) it adds up.
ROWS = [
    ("receive: decrypt, decode", ["decrypt", "decode"]),
    ("core (job run / task manager)", ["scheduler core", "worker core"]),
    ("Ed25519 sign (commitments / receipts)", ["sign"]),
    ("Ed25519 verify (receipts / commitments)", ["verify"]),
    ("store write (SQLite)", ["store write"]),
    ("send: encode, encrypt", ["encode", "encrypt"]),
]


def _signal_snapshot(folder: Path, pids: list[int]) -> list[dict[str, Any]]:
    """Ask these profiled processes for their stages' seconds so far (SIGUSR1), and read
    what each writes."""
    seen = {p: set(folder.glob(f"*-{p}-*.json")) for p in pids}
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    out = []
    for pid in pids:
        deadline = time.monotonic() + 30
        while not (new := set(folder.glob(f"*-{pid}-*.json")) - seen[pid]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"process {pid} wrote no profile (started without it?)")
            time.sleep(0.01)
        out.append(json.loads(new.pop().read_text()))
    return out


def _spent(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per stage (and "cpu", the processes' whole), and calls per stage (as "calls
    <stage>"), between two snapshots, added up over the processes."""
    total: dict[str, float] = {}
    for b, a in zip(before, after, strict=True):
        total["cpu"] = total.get("cpu", 0.0) + a["cpu"] - b["cpu"]
        for stage, seconds in a["seconds"].items():
            total[stage] = total.get(stage, 0.0) + seconds - b["seconds"].get(stage, 0.0)
        for stage, calls in a["calls"].items():
            key = f"calls {stage}"
            total[key] = total.get(key, 0) + calls - b["calls"].get(stage, 0)
    return total


def cpu_table(tasks: int) -> list[str]:
    """Lines of the per-task CPU table: microseconds per task by stage, on the scheduler's
    side and on the workers' (all of them added up), over a run of `tasks` no-op tasks on a
    devnet whose processes time their stages, after a warm-up job."""
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        folder, profiles = Path(tmp) / "net", Path(tmp) / "profiles"
        os.environ[PROFILE_ENV] = str(profiles)  # (the devnet's processes inherit it)
        try:
            net = devnet.up(folder, WORKERS, drivers=["echo"], slots=1, price=0.0)
            try:
                workers = [pid for name, pid in net.pids.items() if name.startswith("worker")]
                p2psched_run(net.gate, noop_job(100))  # its channels, quotes, code warm
                before = _signal_snapshot(profiles, workers)
                marks: list[list[dict[str, Any]]] = []  # the scheduler's (this process's)
                _, counts = p2psched_run(
                    net.gate,
                    noop_job(tasks),
                    mark=lambda: marks.append(_signal_snapshot(profiles, [os.getpid()])),
                )
                sides = {
                    "worker": _spent(before, _signal_snapshot(profiles, workers)),
                    "scheduler": _spent(*marks),
                }
            finally:
                devnet.down(folder)
        finally:
            os.environ.pop(PROFILE_ENV, None)
    lines = [
        f"per-task CPU, us (a run of {tasks} no-op tasks, {counts}, with its stages timed; "
        f"the workers' column adds up all {WORKERS})",
        f"  {'stage':<38} {'scheduler':>10} {'workers':>10}",
    ]
    for name, stages in [*ROWS, ("other: trio, sockets, drivers, ...", None), ("all", None)]:
        cells = []
        for side in ("scheduler", "worker"):
            spent = sides[side]
            staged = sum(v for k, v in spent.items() if k != "cpu" and not k.startswith("calls"))
            if stages is not None:
                seconds = sum(spent.get(s, 0.0) for s in stages)
            else:
                seconds = spent["cpu"] - staged if name.startswith("other") else spent["cpu"]
            cells.append(f"{seconds * 1e6 / tasks:>10.1f}")
        lines.append(f"  {name:<38} {' '.join(cells)}")
    sched, work = sides["scheduler"], sides["worker"]
    per_task = [
        ("scheduler signs", sched.get("calls sign", 0)),
        ("verifies", sched.get("calls verify", 0)),
        ("workers sign", work.get("calls sign", 0)),
        ("verify", work.get("calls verify", 0)),
    ]
    said = ", ".join(f"{what} {n / tasks:.2f}" for what, n in per_task)
    lines.append(f"  signatures per task: {said}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--noop", type=int, default=10_000)
    ap.add_argument("--sleep", type=int, default=2_000)
    ap.add_argument("--sleep-s", type=float, default=0.01)
    ap.add_argument("--profile", type=int, default=2_000, help="tasks of the CPU table's run")
    args = ap.parse_args()
    ideal = args.sleep * args.sleep_s / WORKERS

    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        net = devnet.up(Path(tmp), WORKERS, drivers=["echo", "sleep"], slots=1, price=0.0)
        try:
            p_warm, _ = p2psched_run(net.gate, noop_job(100))  # channels and quotes, once
            p_noop, noop_counts = p2psched_run(net.gate, noop_job(args.noop))
            p_sleep, sleep_counts = p2psched_run(net.gate, sleep_job(args.sleep, args.sleep_s))
        finally:
            devnet.down(Path(tmp))
    d_noop, d_sleep = dask_runs(args.noop, args.sleep, args.sleep_s)

    rows = [
        ("no-op tasks", args.noop, p_noop, d_noop),
        (f"{args.sleep_s * 1000:g} ms sleep tasks", args.sleep, p_sleep, d_sleep),
    ]
    print(f"{WORKERS} worker processes, 1 slot each; ideal sleep makespan {ideal:.2f} s")
    print(
        f"{'workload':<22} {'tasks':>6} {'p2psched s':>11} {'dask s':>8} "
        f"{'p2psched/s':>11} {'dask/s':>8}"
    )
    for name, n, p, d in rows:
        print(f"{name:<22} {n:>6} {p:>11.2f} {d:>8.2f} {n / p:>11.0f} {n / d:>8.0f}")
    signed = [(c.pop("receipts"), c.pop("signatures")) for c in (noop_counts, sleep_counts)]
    print(f"p2psched final states: noop {noop_counts}, sleep {sleep_counts}")
    print(
        "p2psched receipts per worker signature: "
        + ", ".join(
            f"{w} {r / max(1, s):.2f} ({r}/{s})" for w, (r, s) in zip(("noop", "sleep"), signed)
        )
    )
    if args.profile:
        print("\n".join(cpu_table(args.profile)))
    ratio = (args.noop / p_noop) / (args.noop / d_noop)
    print(
        f"dispatch noop_tasks_per_s_ratio={ratio:.2f} "
        f"sleep_makespan_over_ideal={p_sleep / ideal:.3f} "
        f"dask_sleep_makespan_over_ideal={d_sleep / ideal:.3f}"
    )


if __name__ == "__main__":
    main()
