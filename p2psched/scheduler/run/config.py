"""The knobs of a job's run: timeouts and sizes an operator may set (`DispatchConfig`, which a
node takes as `open_node(dispatch=...)`), and the fixed limits and ratios the run's parts share.

    max_result_bytes = 12582912     # a task's output, at most: larger ones fail the worker that
                                    # sent it; the node's links to workers take results this large
    spool_result_bytes = 1048576    # an output larger is kept in a file of the node's data dir
                                    # (outputs/<its SHA-256>), not in memory nor in the store's file
    receive_budget_bytes = 25174016 # results over 64 KiB all links may be receiving at once (at
                                    # least one result); a link waits its turn, reading nothing
    max_partials = 32768            # partial results (a streamed answer's chunks) one task may
                                    # send from one worker; one more fails the task there
    max_partial_bytes = 12582912    # ... and their bytes in all (MessagePack), likewise
    max_partial_items = 2097152     # ... and the items in their maps and lists, decoded (what
                                    # Python builds of them; their maps and lists count too,
                                    # at most the codec's MAX_CONTAINERS)
"""

from __future__ import annotations

from dataclasses import dataclass

from p2psched.store.store import SPOOL_RESULT_BYTES
from p2psched.wire.deal import MAX_RESULT_BYTES, max_result_message

DECLINE_BACKOFF_S = 2.0
MAX_ASIDE = 256  # tasks no worker can take, passed over per commit round, at most
MAX_SCAN = 4096  # queue entries looked at per commit round, at most
MAX_REJECTS = 3
MAX_BUSY_REJECTS = 30  # a minute of backing off: then its quotes are not worth asking for
MAX_PROBES = 4096  # late binding: places reserved by one job, at most
REBALANCE_AFTER_S = 2.0  # a task sent this long ago and not seen running waits in a queue
REBALANCE_GAIN = 0.5  # ... and moves if another worker would have it done in half the time
MAX_MOVES = 64  # tasks moved per sweep, at most
DEADLINE_MARGIN = 1.5  # a worker makes a deadline if it would with its expected time x this
QUEUE_ALLOWANCE = 5  # a sent task may take this many timeouts before it is seen running
APART_WAIT_S = 10.0  # a copy of a task waits this long for a worker on another /16 network
# Measured run times: a task ran at most from dispatch to result less the round trip, and, once
# a heartbeat said it started, at least from that beat to its result and at most a beat's
# interval (BEAT_S, a worker's default) more. A receipt claiming a run outside those bounds by
# more than DURATION_SLACK_S is noted in its worker's record.
BEAT_S = 1.0
MAX_RTT_S = 0.5  # a channel's round trip, as subtracted from a measured run, at most
DURATION_SLACK_S = 1.0


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    quote_timeout_s: float = 5.0
    quote_wait_s: float = 0.25  # how long the first answers wait for the other candidates'
    max_quote_s: float = 30.0  # a quote is used at most this long, whatever it says
    silence_s: float = 5.0  # a worker holding tasks that says nothing this long is lost
    timeout_grace_s: float = 10.0  # beyond a task's own timeout, which the worker enforces
    no_worker_s: float = 30.0  # a task with no candidate this long fails (a job's wait_for_worker)
    rediscover_s: float = 5.0
    # A worker reached through a gate whose link broke: most likely the gate went, not the
    # worker, which moves to another gate and says so in a new ad. Its tasks stay its for
    # this long (they run on, and it keeps their results for us) before they go elsewhere.
    # Shorter than the grace a worker gives a scheduler gone (60 s by default, [worker]
    # scheduler_grace_s), after which it stops that scheduler's tasks.
    regain_s: float = 45.0
    max_quotes: int = 32  # candidates asked at once
    max_result_bytes: int = MAX_RESULT_BYTES
    spool_result_bytes: int = SPOOL_RESULT_BYTES
    receive_budget_bytes: int = 2 * max_result_message(MAX_RESULT_BYTES)
    # A stream is at most its whole output, chunk by chunk: these bound what a worker can make
    # a scheduler decode and pass on for one try of a task.
    max_partials: int = 32768
    max_partial_bytes: int = MAX_RESULT_BYTES
    max_partial_items: int = 1 << 21
