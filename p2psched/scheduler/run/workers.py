"""What one job knows of one worker (`WorkerState`): its ad, its link, its quote and the room
left under it, the tasks it holds for the job, and the job's requests to it in flight."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.run.links import NONE, Link
from p2psched.wire.deal import Quote, VerifiedRoots


@dataclass(slots=True)
class WorkerState:
    ad: WorkerAd
    public_key: bytes | None = None
    link: Link = NONE
    rid: int | None = None  # outstanding quote request
    asked_at: float = 0.0
    quote: Quote | None = None
    quote_until: float = 0.0  # when we stop using `quote`
    room: int = 0  # tasks it would still take under its quote
    holding: set[str] = field(default_factory=set)
    pending: dict[int, list[str]] = field(default_factory=dict)  # commit rid -> tasks
    heard: float = 0.0
    declined: str | None = None
    ask_after: float = 0.0  # after a decline, when to ask again
    rejects: int = 0  # commitments it rejected
    busy_rejects: int = 0  # ... for want of room, which is allowed a while longer
    batch_bytes: int = 0  # inputs in the commitment being put together for it
    banned: bool = False  # broke the protocol: never asked again by this job
    reserved: dict[int, int] = field(default_factory=dict)  # late binding: rid -> places
    run_estimate: float = 1.0  # seconds a task of its quote's kind is expected to take there
    restored: set[str] = field(default_factory=set)  # tasks it held before we restarted
    regain_by: float = math.inf  # a relayed link broke: its tasks wait for it till then
    redial_at: float = math.inf  # ... and while its link is down, we dial it again then
    relayed: bool = False  # its link (when up) goes through a gate's circuit
    withdrawing: dict[int, list[str]] = field(default_factory=dict)  # rid -> tasks asked back
    # The channel's round trip, the least seen from a quote request to its answer (inf until
    # one came): what a run time measured from dispatch to result is net of.
    rtt: float = math.inf
    # Its batches of receipts whose root's signature was checked: once per batch, not per task.
    roots: VerifiedRoots = field(default_factory=VerifiedRoots)

    @property
    def node_id(self) -> bytes:
        return self.ad.node_id

    @property
    def price(self) -> float:
        """What it asks of a task: its quote's price, else its ad's (the least it takes; a
        quote may ask more, by the job's priority)."""
        return self.quote.price if self.quote is not None else self.ad.profile.min_price

    def relink(self, new: Link) -> None:
        self.link = self.link.to(new)
