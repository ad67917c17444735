"""What the predictor answers: `Estimate`, the expected wait and run time of a task on a worker
as mean ± spread, saying where it came from; and the input-size buckets estimates are kept by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["observed", "worker", "claimed", "default", "table"]


def size_bucket(size: int) -> int:
    """The power-of-two bucket of an encoded input of `size` bytes (0 for an empty input)."""
    if size < 0:
        raise ValueError(f"input size must be >= 0 bytes, got {size!r}")
    return size.bit_length()


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected wait before a task starts and run time once started, in seconds, each a mean and
    the spread of a single observation around it (standard deviation). `samples` is how many
    observations the answer rests on (0 for a claim or the default)."""

    wait_mean: float
    wait_err: float
    run_mean: float
    run_err: float
    samples: int
    source: Source

    def to_json(self) -> dict[str, Any]:
        return {
            "wait_mean": self.wait_mean,
            "wait_err": self.wait_err,
            "run_mean": self.run_mean,
            "run_err": self.run_err,
            "samples": self.samples,
        }
