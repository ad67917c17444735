"""The predictor's two ways on the same LLM tasks: by model and input size (the metadata ignored)
against the token fit (input and output tokens from the metadata), each task predicted before
its run is learned, as a node meets them (tests/harness/token_runs.py makes the test set: per
worker and model, run = a + b·input_tokens + c·output_tokens + noise).

    python bench/predictor.py [--tasks 4000] [--workers 4] [--seeds 3]

Ends with: predictor rmse_ratio=<by size / by tokens> (larger: the fit is better)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.token_runs import score, token_runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=4, help="each serving two models")
    parser.add_argument("--seeds", type=int, default=3, help="test sets, one per seed")
    parser.add_argument("--warmup", type=int, default=500, help="tasks only learned from")
    args = parser.parse_args()

    print(
        f"{'seed':>4} {'tasks':>6} {'rmse by size s':>15} {'rmse by tokens s':>17} "
        f"{'ratio':>7} {'oracle s':>9} {'within 2 err':>13} {'µs/task':>8}"
    )
    ratios = []
    for seed in range(args.seeds):
        runs = token_runs(seed, args.tasks, args.workers)
        start = time.perf_counter()
        s = score(runs, args.warmup)
        per_task_us = (time.perf_counter() - start) / len(runs) * 1e6
        ratios.append(s.ratio)
        print(
            f"{seed:>4} {s.tasks:>6} {s.by_size:>15.3f} {s.by_tokens:>17.3f} "
            f"{s.ratio:>6.1f}x {s.oracle:>9.3f} {s.within_2_err:>12.0%} {per_task_us:>8.1f}"
        )
    print(
        "(oracle: each task's true line, its miss the noise alone; µs/task: two estimates and "
        "one observation; 'within 2 err': the fit's misses within twice the error it reported)"
    )
    print(f"predictor rmse_ratio={statistics.median(ratios):.1f}")


if __name__ == "__main__":
    main()
