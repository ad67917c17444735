"""Choosing the worker for an MTR: the envelope's query against the linear scan, same candidates.

Candidates have prices and times spread over 10× (log-uniform), as in the scheduler simulation;
MTRs are log-uniform over 10**-3 .. 10**3. "churn" is the scheduler's pattern: the best worker
fills up and is removed, another frees up and is added, then the next query. Every answer the
scan gives is checked against the envelope's.

    python bench/lichao.py [--queries 10000] [--linear-queries 300] [--churn 2000] [--seed 1]

Ends with: lichao speedup_10k=<x> speedup_100k=<y>
"""

from __future__ import annotations

import argparse
import random
import time

from p2psched.scheduler.lichao import Line, LowerEnvelope, brute_force_best


def candidates(rng: random.Random, n: int) -> list[Line]:
    return [Line(10 ** rng.random(), 10 ** rng.random(), key=i) for i in range(n)]


def run(n: int, args: argparse.Namespace, rng: random.Random) -> tuple[float, str]:
    lines = candidates(rng, n)
    mtrs = [10 ** rng.uniform(-3, 3) for _ in range(args.queries)]

    start = time.perf_counter()
    envelope = LowerEnvelope(lines)
    envelope.best(0.0)  # the envelope is computed at the first query: part of building it
    build_ms = (time.perf_counter() - start) * 1e3

    start = time.perf_counter()
    answers = [envelope.best(m) for m in mtrs]
    envelope_us = (time.perf_counter() - start) / len(mtrs) * 1e6

    scanned = mtrs[: args.linear_queries]
    start = time.perf_counter()
    scan_answers = [brute_force_best(lines, m) for m in scanned]
    linear_us = (time.perf_counter() - start) / len(scanned) * 1e6
    wrong = sum(a is not b for a, b in zip(answers, scan_answers))
    if wrong:
        raise SystemExit(f"{wrong} of {len(scanned)} answers differ from the scan at N={n}")

    spare = candidates(rng, args.churn)
    start = time.perf_counter()
    for i, line in enumerate(spare):
        chosen = envelope.best(mtrs[i % len(mtrs)])
        assert chosen is not None
        envelope.remove(chosen.key)
        envelope.add(Line(line.price, line.time, key=("spare", i)))
    envelope.best(1.0)
    churn_us = (time.perf_counter() - start) / len(spare) * 1e6

    speedup = linear_us / envelope_us
    row = (
        f"{n:>8,} {build_ms:>10.1f} {envelope_us:>12.2f} {linear_us:>12.1f} "
        f"{speedup:>9,.0f}x {churn_us:>10.1f}"
    )
    return speedup, row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000, help="envelope queries per N")
    parser.add_argument("--linear-queries", type=int, default=300, help="scans per N (slow)")
    parser.add_argument("--churn", type=int, default=2_000, help="remove-best/add/query rounds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    print(
        f"{'N':>8} {'build ms':>10} {'envelope µs':>12} {'linear µs':>12} {'speedup':>10} "
        f"{'churn µs':>10}"
    )
    speedups = {}
    for n in (10_000, 100_000):
        speedups[n], row = run(n, args, rng)
        print(row)
    print(
        f"({args.queries} envelope queries and {args.linear_queries} scans per N, same MTRs; "
        "churn = remove the best, add another, query)"
    )
    print(f"lichao speedup_10k={speedups[10_000]:.0f} speedup_100k={speedups[100_000]:.0f}")


if __name__ == "__main__":
    main()
