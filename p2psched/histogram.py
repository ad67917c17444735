"""Fixed-bucket histograms of plain numbers: how the sans-I/O cores (the DHT protocol, the
scheduler's job runs, the worker's task manager) record durations without importing a metrics
library. The node's metrics read them at scrape time.

Promises: observing is O(log buckets) and allocates nothing; the buckets never change after
creation, so what a scrape reads is always consistent with Prometheus's `le` semantics (a value
equal to a bound counts in that bound's bucket).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

# Seconds. A DHT round trip on a LAN is under a millisecond; over the internet tens to hundreds.
ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# A task waiting for a worker: from instant (an idle network) to an hour (a deep backlog).
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
# A driver's run: an echo takes microseconds, a model's batch minutes, a training step hours.
RUN_TIME_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


@dataclass(slots=True)
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket; the last one is +Inf
    sum: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)) or not all(
            math.isfinite(b) for b in self.bounds
        ):
            raise ValueError(f"bucket bounds must be finite and increasing: {self.bounds}")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        if value != value:  # NaN: a broken clock reading, not a duration
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def copy(self) -> Histogram:
        """A copy that later observations leave as it is (a snapshot's)."""
        return Histogram(self.bounds, list(self.counts), self.sum)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), the last bound being +inf."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts):
            running += n
            out.append((bound, running))
        return out
