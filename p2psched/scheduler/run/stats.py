"""What a node's jobs did, in plain numbers its metrics read: one `DispatchStats` is shared by
all of a node's runs, which only ever add to it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from p2psched.histogram import QUEUE_WAIT_BUCKETS, Histogram


@dataclass(slots=True)
class DispatchStats:
    """What a node's jobs did, summed over them (they share one): plain numbers for its metrics."""

    # Messages of the deal by kind, both ways (asked, quote, decline, commit, lease, reject,
    # reserve, ready, withdraw, withdrawn), and quote requests left unanswered (no_answer).
    negotiation: Counter[str] = field(default_factory=Counter)
    # Final states reached (completed, failed, timed_out, aborted), and retried: a task put
    # back in the queue after a worker had it.
    outcomes: Counter[str] = field(default_factory=Counter)
    # Partial results (a streamed answer's chunks) passed on to watchers, and refused: for a
    # task the worker did not hold, or over a task's caps.
    partials: Counter[str] = field(default_factory=Counter)
    # Seconds from entering the queue to being handed to a worker.
    queue_wait: Histogram = field(default_factory=lambda: Histogram(QUEUE_WAIT_BUCKETS))
