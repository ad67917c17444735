"""Signed documents across the change that gave quotes and commitments a `gpus` field: what
ledgers stored before it still verifies and says the same, and neither form of a document can
be passed off as the other. Commitments of one commit round under one signature: each
verifies alone, none altered does."""

from __future__ import annotations

import time

import msgspec

from p2psched.identity import Identity, verify
from p2psched.wire.codec import decode, encode
from p2psched.wire.deal import Commitment, Quote, RoundProof, signed_together
from p2psched.wire.messages import Commit, parse
from p2psched.wire.messages import encode as encode_message

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


def round_of(n: int) -> list[Commitment]:
    """`n` commitments of one commit round, to `n` workers, signed together."""
    workers = [Identity.generate() for _ in range(n)]
    return signed_together(
        [
            Commitment(SCHEDULER.node_id, w.node_id, "job", [f"job/{i}"], 0.5, 100.0)
            for i, w in enumerate(workers)
        ],
        SCHEDULER,
    )


def test_a_rounds_commitments_share_one_signature_and_each_verifies_alone() -> None:
    """Five commitments, one signature (over their Merkle root): each verifies by itself,
    also after the wire (the `Commit` message) and after the ledger's form of it."""
    signed = round_of(5)
    assert len({c.sig for c in signed}) == 1
    assert all(isinstance(c.round, RoundProof) and c.round.size == 5 for c in signed)
    for c in signed:
        assert c.verify(SCHEDULER.public_key)
        sent = parse(encode_message(Commit(1, c, [])))
        assert isinstance(sent, Commit) and sent.commitment.verify(SCHEDULER.public_key)
        stored = Commitment.from_wire(decode(encode(c.to_wire())), "commitment")
        assert stored == c and stored.verify(SCHEDULER.public_key)
    assert not signed[0].verify(WORKER.public_key)  # nor for another key


def test_a_round_signed_commitment_altered_or_given_anothers_proof_does_not_verify() -> None:
    a, b, *_ = round_of(3)
    assert isinstance(a.round, RoundProof)
    for forged in (
        msgspec.structs.replace(a, price=0.25),
        msgspec.structs.replace(a, tasks=["job/1", "job/9"]),
        msgspec.structs.replace(a, round=b.round),  # its own body, another's place
        msgspec.structs.replace(a, round=msgspec.structs.replace(a.round, index=1)),
        msgspec.structs.replace(a, round=msgspec.structs.replace(a.round, path=[])),
        msgspec.structs.replace(a, round=msgspec.UNSET),  # the root's signature is no body's
    ):
        assert not forged.verify(SCHEDULER.public_key)


def test_a_commitment_signed_alone_keeps_its_form() -> None:
    """A round of one is signed as before: over its body, no proof, none on the wire."""
    [c] = round_of(1)
    assert c.round is msgspec.UNSET
    assert c.sig and verify(SCHEDULER.public_key, c.sig, c.body())
    assert "round" not in c.to_wire()
    assert b"round" not in encode_message(Commit(1, c, []))
