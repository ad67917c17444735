"""Listing the jobs a node keeps in its store: what `p2psched jobs` costs on a node that has run
many (those before a restart are read from the store alone).

A store of `--jobs` finished jobs of `--tasks` tasks each; the node lists the newest 100 (with
their task counts, spending and workers) and reads one job's status. The comparison peer is the
listing of every job (what an unbounded `/v1/jobs` would read).

    python bench/listing.py [--jobs 10000] [--tasks 10] [--repeat 20]

Ends with: listing ms_newest_100=<x> ms_one_job=<y> ms_every_job=<z>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from p2psched.identity import Identity
from p2psched.store import Store
from p2psched.store.journal import Entry, JobFinished, JobOpened, Moved

WORKER = Identity.generate()


def fill(store: Store, jobs: int, tasks: int) -> None:
    """`jobs` finished jobs, each of `tasks` tasks that completed on WORKER."""
    for start in range(0, jobs, 500):
        batch: list[Entry] = []
        for j in range(start, min(start + 500, jobs)):
            job = f"job-{j:06d}"
            batch.append(JobOpened(job, "job", {"name": "job"}, float(j), 1.0, 10.0, None))
            for i in range(tasks):
                w = WORKER.node_id
                batch.append(
                    Moved(f"{job}/{i}", job, "sent", "completed", j, None, w, 0.1, 0, None)
                )
            batch.append(JobFinished(job, float(j) + 1))
        store.write(batch)


def ms(call: Callable[[], object], repeat: int) -> float:
    """The best of `repeat` calls, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "state.db") as store:
        fill(store, args.jobs, args.tasks)
        newest = ms(lambda: store.jobs(100), args.repeat)
        one = ms(lambda: store.job(f"job-{args.jobs // 2:06d}"), args.repeat)
        every = ms(lambda: store.jobs(args.jobs), max(1, args.repeat // 10))
    print(f"{args.jobs} jobs of {args.tasks} tasks in the store")
    print(f"{'read':<34}{'ms':>10}")
    print(f"{'the newest 100 (jobs)':<34}{newest:>10.2f}")
    print(f"{'one job (status)':<34}{one:>10.2f}")
    print(f"{'every job (unbounded listing)':<34}{every:>10.2f}")
    print(f"listing ms_newest_100={newest:.2f} ms_one_job={one:.2f} ms_every_job={every:.2f}")


if __name__ == "__main__":
    main()
