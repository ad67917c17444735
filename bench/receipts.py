"""Checking a worker's receipts on the scheduler: what one task's check costs, its receipt
signed alone (the form before batches, one Ed25519 check per task) against receipts signed in
batches of `--batch` (one check per batch, then each receipt's path: hashes only).

Each result goes through the scheduler's own `check_receipt` (signature, names, success,
output hash, price) with a small output, as a no-op task returns; the worker's signing is
timed too (one signature per batch).

    python bench/receipts.py [--tasks 4096] [--batch 1 4 16 64 4096]

Ends with: receipts alone_us_per_task=<x> batched_us_per_task=<y> (at the largest batch)
"""

from __future__ import annotations

import argparse
import time

import msgspec

from p2psched.identity import Identity
from p2psched.scheduler.run.receipts import check_receipt
from p2psched.wire.codec import encode
from p2psched.wire.deal import Receipt, VerifiedRoots, packed_hash, signed_batch
from p2psched.wire.messages import Result

SCHEDULER = Identity.generate()
WORKER = Identity.generate()


def results(n: int, batch: int) -> tuple[list[Result], float]:
    """`n` results of no-op tasks, their receipts signed in batches of `batch`; and the
    seconds the worker took to sign them."""
    outputs = [encode({"out": i}) for i in range(n)]
    unsigned = [
        Receipt(
            WORKER.node_id, SCHEDULER.node_id, "job", f"job/{i}", True, packed_hash(out),
            0.001, 0.0, 1000.0 + i,
        )
        for i, out in enumerate(outputs)
    ]  # fmt: skip
    t0 = time.perf_counter()
    receipts = [
        r for k in range(0, n, batch) for r in signed_batch(WORKER, unsigned[k : k + batch])
    ]
    signing = time.perf_counter() - t0
    made = [
        Result(r.task, msgspec.Raw(out), None, r) for r, out in zip(receipts, outputs, strict=True)
    ]
    return made, signing


def checked(made: list[Result]) -> float:
    """Seconds the scheduler takes to check each result (one cache of roots, as one
    worker's link has)."""
    roots = VerifiedRoots()
    t0 = time.perf_counter()
    for m in made:
        problem, _, _ = check_receipt(
            m,
            WORKER.public_key,
            (SCHEDULER.node_id, "job", m.task),
            committed=0.0,
            max_bytes=1 << 20,
            roots=roots,
        )
        assert problem is None, problem
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=4096)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64, 4096])
    args = ap.parse_args()
    n = args.tasks
    print(f"{n} no-op results; microseconds per task")
    print(f"{'receipts per signature':>22} {'scheduler check':>16} {'worker signing':>15}")
    per_task = {}
    for batch in args.batch:
        made, signing = results(n, batch)
        checked(made[: min(n, 256)])  # warm
        check = min(checked(made) for _ in range(3))
        per_task[batch] = check / n * 1e6
        print(f"{batch:>22} {per_task[batch]:>16.1f} {signing / n * 1e6:>15.1f}")
    alone, most = per_task.get(1, float("nan")), per_task[max(args.batch)]
    print(f"receipts alone_us_per_task={alone:.1f} batched_us_per_task={most:.1f}")


if __name__ == "__main__":
    main()
