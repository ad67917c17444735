"""Dispatch throughput and makespan: p2psched against Dask distributed, same machine, same run.

p2psched: a devnet (gate + 4 worker processes, one slot each) on loopback, and a scheduler
node in this process that submits the job through the DHT and the Noise channels, exactly as
`p2psched submit` does. Dask: `LocalCluster` with 4 worker processes, one thread each.

    python bench/dispatch.py [--noop 10000] [--sleep 2000] [--sleep-s 0.01]

Ends with: dispatch noop_tasks_per_s_ratio=<p2psched/dask> sleep_makespan_over_ideal=<x>
dask_sleep_makespan_over_ideal=<y>
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import trio

from p2psched import devnet
from p2psched.identity import Identity
from p2psched.node.node import open_node
from p2psched.scheduler.job import parse_job

WORKERS = 4


def p2psched_run(gate: str, doc: dict[str, Any]) -> tuple[float, dict[str, int]]:
    """Seconds from submission until every task is final; and the tasks' final states, with
    "receipts" and "signatures": how many receipts came, under how many signatures."""
    host, _, port = gate.rpartition(":")
    out: dict[str, Any] = {}

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with open_node(
                Identity.generate(), Path(tmp), seeds=[(host, int(port))], dht_client=True
            ) as node:
                spec = parse_job(doc)
                t0 = time.perf_counter()
                job = node.jobs.submit(spec)
                await job.done.wait()
                out["seconds"] = time.perf_counter() - t0
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--noop", type=int, default=10_000)
    ap.add_argument("--sleep", type=int, default=2_000)
    ap.add_argument("--sleep-s", type=float, default=0.01)
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
    ratio = (args.noop / p_noop) / (args.noop / d_noop)
    print(
        f"dispatch noop_tasks_per_s_ratio={ratio:.2f} "
        f"sleep_makespan_over_ideal={p_sleep / ideal:.3f} "
        f"dask_sleep_makespan_over_ideal={d_sleep / ideal:.3f}"
    )


if __name__ == "__main__":
    main()
