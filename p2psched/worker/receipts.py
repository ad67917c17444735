"""The receipts a worker signs, a step at a time: each result of a step is made with its
receipt unsigned (`StepResults.add`), and the step's are signed at its end (`signed`): one
signature per scheduler's batch (`wire.deal.signed_batch`; one result alone is signed alone).

Promises: each result comes out of `signed` once, its receipt signed by this worker, in the
order the results were made.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from p2psched.identity import Identity
from p2psched.wire.deal import MAX_BATCH, Receipt, packed_hash, signed_batch
from p2psched.wire.messages import Result, said
from p2psched.worker.holdings import Held


@dataclass(frozen=True, slots=True)
class Unsigned:
    """A result made in this step, its receipt not signed yet."""

    peer: bytes
    message: Result
    size: int  # its output's bytes
    at: int | None  # its place among the manager's actions (None: its scheduler is away)
    made_at: float


@dataclass(slots=True)
class StepResults:
    made: list[Unsigned] = field(default_factory=list)

    def add(
        self,
        identity: Identity,
        peer: bytes,
        held: Held,
        at: int | None,
        packed: bytes,
        error: str | None,
        duration: float,
        now: float,
    ) -> Result:
        """A result for `peer` (`packed`: its output, encoded; None encoded, on an error),
        its receipt unsigned till `signed`; `at`: its place among the manager's actions."""
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
        self.made.append(Unsigned(peer, message, len(packed), at, now))
        return message

    def owed_to(self, peer: bytes) -> bool:
        return any(u.peer == peer for u in self.made)

    def signed(self, identity: Identity) -> Iterator[tuple[Unsigned, Result]]:
        """The results made since the last call, each with its receipt signed by `identity`."""
        batches: dict[bytes, list[Unsigned]] = {}
        for u in self.made:
            batches.setdefault(u.peer, []).append(u)
        self.made = []
        for made in batches.values():
            for start in range(0, len(made), MAX_BATCH):
                chunk = made[start : start + MAX_BATCH]
                receipts = signed_batch(identity, [u.message.receipt for u in chunk])
                for u, receipt in zip(chunk, receipts, strict=True):
                    yield u, msgspec.structs.replace(u.message, receipt=receipt)
