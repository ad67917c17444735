"""Writing the scheduler's journal to the SQLite store: what one entry costs.

The scheduler's traffic per task: five `Moved` (queued, negotiating, scheduled, sent, completed)
and one `Charged` (a small result and its receipt), with one `Committed` per group of tasks.
Groups of `--batch` tasks move one step per `write`; the comparison peer is the same entries with
one transaction per entry (what a naive "write it as it happens" store would do).

    python bench/store.py [--tasks 20000] [--batch 200] [--naive-tasks 1000]

Ends with: store us_per_entry=<x> naive_us_per_entry=<y>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from p2psched.identity import Identity
from p2psched.store import Store
from p2psched.store.journal import Charged, Committed, Entry, JobOpened, Moved
from p2psched.wire.codec import encode
from p2psched.wire.deal import Commitment, Receipt, packed_hash

SCHEDULER = Identity.generate()
WORKER = Identity.generate()
STATES = ["unscheduled", "queued", "negotiating", "scheduled", "sent", "completed"]


def batches(job: str, tasks: int, batch: int) -> list[list[Entry]]:
    """As `JobRun` steps: each write moves a group of tasks one state on (committing them, or
    charging their receipts, in the same write). Signed documents are made here, not timed:
    signing is the core's cost, not the store's."""
    out: list[list[Entry]] = []
    for start in range(0, tasks, batch):
        ids = [f"{job}-{i:06d}" for i in range(start, min(start + batch, tasks))]
        for old, new in zip(STATES, STATES[1:]):
            w = WORKER.node_id if new in ("scheduled", "sent", "completed") else None
            step: list[Entry] = [Moved(t, job, old, new, 2.0, None, w, 0.01, 1, None) for t in ids]
            if new == "scheduled":
                commitment = Commitment(
                    SCHEDULER.node_id, WORKER.node_id, job, ids, 0.01, 1.0
                ).signed(SCHEDULER)
                step.append(Committed(commitment, ("10.0.0.1:4000",), 1.0))
            if new == "completed":
                step.extend(charged(job, t) for t in ids)
            out.append(step)
    return out


def charged(job: str, task: str) -> Charged:
    output = encode({"task": task, "value": 42})
    receipt = Receipt(
        WORKER.node_id, SCHEDULER.node_id, job, task, True, packed_hash(output), 0.5, 0.01, 3.0
    ).signed(WORKER)
    return Charged(receipt, WORKER.public_key, output, 3.0)


def timed(path: Path, job: str, work: list[list[Entry]], per_entry: bool) -> tuple[float, int]:
    with Store.open(path, own_public_key=SCHEDULER.public_key) as store:
        store.write([JobOpened(job, "bench", {}, 0.0, 1.0, 1.0, None)])
        n = sum(len(b) for b in work)
        start = time.perf_counter()
        for b in work:
            if per_entry:
                for e in b:
                    store.write([e])
            else:
                store.write(b)
        return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--naive-tasks", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        batched, n = timed(
            Path(tmp) / "a.db", "a-1", batches("a-1", args.tasks, args.batch), per_entry=False
        )
        naive, m = timed(
            Path(tmp) / "b.db", "b-1", batches("b-1", args.naive_tasks, 1), per_entry=True
        )
    us, naive_us = batched / n * 1e6, naive / m * 1e6
    print(f"{'how':<28}{'entries':>10}{'seconds':>10}{'us/entry':>10}{'tasks/s':>10}")
    print(f"{'batched (' + str(args.batch) + ' tasks/step)':<28}{n:>10}{batched:>10.2f}"
          f"{us:>10.1f}{args.tasks / batched:>10.0f}")  # fmt: skip
    print(f"{'one transaction per entry':<28}{m:>10}{naive:>10.2f}"
          f"{naive_us:>10.1f}{args.naive_tasks / naive:>10.0f}")  # fmt: skip
    print(f"store us_per_entry={us:.1f} naive_us_per_entry={naive_us:.1f}")


if __name__ == "__main__":
    main()
