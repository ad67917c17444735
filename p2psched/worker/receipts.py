"""The receipts a worker signs, in batches: each result is made with its receipt unsigned
(`ResultsToSign.add`), and a scheduler's results made meanwhile are signed together when they
are due (`signed`): one signature per batch (`wire.deal.signed_batch`; one result alone is
signed alone). A short task's result (it succeeded, in less than `hold_s`) waits up to
`hold_s` while more of its scheduler's tasks run or wait here, so that their results share its
signature; any other is due at once, and takes those waiting with it.

Promises: each result comes out of `signed` once, its receipt signed by this worker, in the
order its scheduler's results were made; none waits past `next_deadline()`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from p2psched.identity import Identity
from p2psched.wire.deal import MAX_BATCH, Receipt, packed_hash, signed_batch
from p2psched.wire.messages import Result, said
from p2psched.worker.holdings import Held


@dataclass(frozen=True, slots=True)
class Unsigned:
    """A result made, its receipt not signed yet."""

    peer: bytes
    message: Result
    size: int  # its output's bytes
    made_at: float


@dataclass(slots=True)
class ResultsToSign:
    hold_s: float = 0.005
    _made: dict[bytes, list[Unsigned]] = field(default_factory=dict)  # by scheduler
    _due: dict[bytes, float] = field(default_factory=dict)  # when its batch is signed

    def add(
        self,
        identity: Identity,
        peer: bytes,
        held: Held,
        packed: bytes,
        error: str | None,
        duration: float,
        now: float,
        more_coming: bool,
    ) -> None:
        """A result for `peer` (`packed`: its output, encoded; None encoded, on an error),
        its receipt unsigned till `signed`; `more_coming`: more of `peer`'s tasks run or
        wait here."""
        receipt = Receipt(
            worker=identity.node_id,
            scheduler=peer,
            job=held.job,
            task=held.task.id,
            ok=error is None,
            result_hash=packed_hash(packed),
            duration=duration,
            price=held.price if error is None else 0.0,
            finished_at=now,
        )
        # The output goes as it was hashed: the bytes the receipt names.
        message = Result(
            held.task.id, msgspec.Raw(packed), error if error is None else said(error), receipt
        )
        made = self._made.setdefault(peer, [])
        made.append(Unsigned(peer, message, len(packed), now))
        short = error is None and duration < self.hold_s  # (a failure goes at once)
        wait = more_coming and short and len(made) < MAX_BATCH
        due = now + self.hold_s if wait else -math.inf
        self._due[peer] = min(self._due.get(peer, math.inf), due)

    def owed_to(self, peer: bytes) -> bool:
        return peer in self._made

    def next_deadline(self) -> float:
        return min(self._due.values(), default=math.inf)

    def signed(self, identity: Identity, now: float) -> Iterator[tuple[Unsigned, Result]]:
        """The results due by `now` (all: `math.inf`), each with its receipt signed by
        `identity`."""
        for peer in [p for p, due in self._due.items() if due <= now]:
            del self._due[peer]
            made = self._made.pop(peer)
            for start in range(0, len(made), MAX_BATCH):
                chunk = made[start : start + MAX_BATCH]
                receipts = signed_batch(identity, [u.message.receipt for u in chunk])
                for u, receipt in zip(chunk, receipts, strict=True):
                    yield u, msgspec.structs.replace(u.message, receipt=receipt)
