"""Signed documents across the change that gave quotes and commitments a `gpus` field: what
ledgers stored before it still verifies and says the same, and neither form of a document can
be passed off as the other."""

from __future__ import annotations

import time

from p2psched.identity import Identity
from p2psched.wire.codec import encode
from p2psched.wire.deal import Commitment, Quote

SCHEDULER = Identity.generate()
WORKER = Identity.generate()


def test_a_commitment_stored_before_gpus_were_priced_still_verifies() -> None:
    """Signed as the code before the field did (its tag, its fields), stored as it wrote it
    (a map without `gpus`): read back, it verifies and is a commitment for no GPUs."""
    fields = [SCHEDULER.node_id, WORKER.node_id, "job", ["job/1"], 0.5, time.time()]
    sig = SCHEDULER.sign(b"p2psched/commitment/1" + encode(fields))
    names = ("scheduler", "worker", "job", "tasks", "price", "issued_at")
    stored = {**dict(zip(names, fields, strict=True)), "sig": sig}
    c = Commitment.from_packed(encode(stored), "commitment")
    assert c.gpus == 0
    assert c.verify(SCHEDULER.public_key)


def test_a_quote_for_gpus_cannot_be_passed_off_as_one_for_none() -> None:
    """The two forms are signed under different tags: a signature made for 4 GPUs covers
    no document for 0 (a cheaper-looking quote), and one made for 0 none for 4."""
    q = Quote(WORKER.node_id, SCHEDULER.node_id, "job", 4.0, 0.0, 0.0, 0.0, 1, 1e10, 4)
    q = q.signed(WORKER)
    assert q.verify(WORKER.public_key)
    for gpus in (0, 1):
        other = Quote(*q.values()[:-2], gpus, q.sig)
        assert not other.verify(WORKER.public_key)
    zero = Quote(*q.values()[:-2], 0, b"").signed(WORKER)
    assert zero.verify(WORKER.public_key)
    assert not Quote(*zero.values()[:-2], 4, zero.sig).verify(WORKER.public_key)
