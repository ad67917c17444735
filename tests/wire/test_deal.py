"""Signed documents across the change that gave quotes and commitments a `gpus` field: what
ledgers stored before it still verifies and says the same, and neither form of a document can
be passed off as the other. Commitments of one commit round under one signature: each
verifies alone, none altered does. Receipts signed in batches: each provable on its own under one
signature, a receipt signed alone as it always was, and each forgery within a batch refused."""

from __future__ import annotations

import time

import msgspec
import pytest

from p2psched.identity import Identity, verify
from p2psched.wire import messages
from p2psched.wire.codec import decode, encode
from p2psched.wire.deal import (
    MAX_BATCH,
    MAX_BATCH_LEVELS,
    BatchProof,
    Commitment,
    Quote,
    Receipt,
    VerifiedRoots,
    packed_hash,
    signed_batch,
)
from p2psched.wire.messages import Commit, Result, parse
from p2psched.wire.messages import encode as encode_message
from p2psched.wire.schema import SchemaError
from tests.harness.net import BATCH_FORGERIES

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
    return signed_batch(
        SCHEDULER,
        [
            Commitment(SCHEDULER.node_id, w.node_id, "job", [f"job/{i}"], 0.5, 100.0)
            for i, w in enumerate(workers)
        ],
    )


def test_a_rounds_commitments_share_one_signature_and_each_verifies_alone() -> None:
    """Five commitments, one signature (over their Merkle root): each verifies by itself,
    also after the wire (the `Commit` message) and after the ledger's form of it."""
    signed = round_of(5)
    assert len({c.sig for c in signed}) == 1
    assert [c.batch.index for c in signed if isinstance(c.batch, BatchProof)] == list(range(5))
    for c in signed:
        assert c.verify(SCHEDULER.public_key)
        sent = parse(encode_message(Commit(1, c, [])))
        assert isinstance(sent, Commit) and sent.commitment.verify(SCHEDULER.public_key)
        stored = Commitment.from_wire(decode(encode(c.to_wire())), "commitment")
        assert stored == c and stored.verify(SCHEDULER.public_key)
    assert not signed[0].verify(WORKER.public_key)  # nor for another key


def test_a_round_signed_commitment_altered_or_given_anothers_proof_does_not_verify() -> None:
    a, b, *_ = round_of(3)
    assert isinstance(a.batch, BatchProof)
    for forged in (
        msgspec.structs.replace(a, price=0.25),
        msgspec.structs.replace(a, tasks=["job/1", "job/9"]),
        msgspec.structs.replace(a, batch=b.batch),  # its own body, another's place
        msgspec.structs.replace(a, batch=msgspec.structs.replace(a.batch, index=1)),
        msgspec.structs.replace(a, batch=msgspec.structs.replace(a.batch, path=[])),
        msgspec.structs.replace(a, batch=msgspec.UNSET),  # the root's signature is no body's
    ):
        assert not forged.verify(SCHEDULER.public_key)


@pytest.mark.parametrize("forgery", BATCH_FORGERIES)
def test_a_commitment_forged_within_its_round_is_refused_naming_why(forgery: str) -> None:
    """The forgeries a receipt's batch is tried with, on a commit round: named alike."""
    stranger = Identity.generate()
    a, b, _ = round_of(3)
    roots = VerifiedRoots()
    assert a.verify(SCHEDULER.public_key, roots)
    forged = BATCH_FORGERIES[forgery](b, stranger)
    problem = forged.problem(SCHEDULER.public_key, roots)
    if forgery == "past_tree":
        assert problem == "has a batch proof whose index (5) is past its tree (2 levels)"
    else:
        assert problem is not None
        assert problem.startswith("is not in a batch signed by the scheduler")
    assert not forged.verify(SCHEDULER.public_key)


def test_a_batch_root_signed_for_one_kind_of_document_is_no_root_of_another() -> None:
    """The same signer, the same leaves: a receipt batch's root is not a commitment round's,
    and a root verified for one kind does not pass for the other from the cache."""
    assert Receipt.BATCH is not None and Commitment.BATCH is not None
    leaves = [bytes(32), bytes(31) + b"\x01"]
    receipts_root = Receipt.BATCH.tree(leaves).root
    assert Commitment.BATCH.tree(leaves).root != receipts_root
    sig = WORKER.sign(Receipt.BATCH.signed_root(receipts_root))
    roots = VerifiedRoots()
    assert roots.verify(Receipt.BATCH, WORKER.public_key, receipts_root, sig)
    assert not roots.verify(Commitment.BATCH, WORKER.public_key, receipts_root, sig)
    assert not verify(WORKER.public_key, sig, Receipt.TAG + receipts_root)


def test_a_commitment_signed_alone_keeps_its_form() -> None:
    """A round of one is signed as before: over its body, no proof, none on the wire."""
    [c] = round_of(1)
    assert c.batch is msgspec.UNSET
    assert c.sig and verify(SCHEDULER.public_key, c.sig, c.body())
    assert "batch" not in c.to_wire()
    assert b"batch" not in encode_message(Commit(1, c, []))


# -- receipts signed in batches -------------------------------------------------------------


def unsigned_receipts(n: int, worker: Identity = WORKER) -> list[Receipt]:
    return [
        Receipt(
            worker.node_id, SCHEDULER.node_id, "job", f"job/{i}", True, packed_hash(encode(i)),
            0.01, 0.5, 1000.0 + i,
        )
        for i in range(n)
    ]  # fmt: skip


def test_a_receipt_stored_before_batches_still_verifies_and_is_written_the_same() -> None:
    """Signed as the code before batches did (its tag, its fields), stored as it wrote it (a
    map of its fields): read back, it verifies, and is written again byte for byte; one
    signed alone today is that form, and its message carries no batch."""
    fields = [WORKER.node_id, SCHEDULER.node_id, "job", "job/1", True, bytes(32), 0.5, 1.0, 2.0]
    sig = WORKER.sign(b"p2psched/receipt/1" + encode(fields))
    names = (
        "worker", "scheduler", "job", "task", "ok", "result_hash", "duration", "price",
        "finished_at",
    )  # fmt: skip
    stored = encode({**dict(zip(names, fields, strict=True)), "sig": sig})
    r = Receipt.from_packed(stored, "receipt")
    assert r.batch is msgspec.UNSET and r.verify(WORKER.public_key)
    assert encode(r.to_wire()) == stored
    [alone] = signed_batch(WORKER, [Receipt(*fields)])  # type: ignore[arg-type]
    assert alone == r
    message = messages.encode(Result("job/1", msgspec.Raw(encode(None)), None, alone))
    assert b"batch" not in message
    assert msgspec.msgpack.decode(message)["receipt"] == msgspec.msgpack.decode(stored)


@pytest.mark.parametrize("n", [2, 5, 8, MAX_BATCH])
def test_each_receipt_of_a_batch_verifies_on_its_own_under_one_signature(n: int) -> None:
    batch = signed_batch(WORKER, unsigned_receipts(n))
    assert len({r.sig for r in batch}) == 1
    assert [r.batch.index for r in batch if r.batch] == list(range(n))
    assert {len(r.batch.path) for r in batch if r.batch} == {(n - 1).bit_length()}
    roots = VerifiedRoots()
    assert all(r.verify(WORKER.public_key, roots) for r in batch)
    assert roots.signatures == 1  # one signature checked, the rest hashes only
    # Each on its own, as a ledger or `verify JOB` reads it back: from its stored form.
    for r in (batch[0], batch[-1]):
        stored = Receipt.from_packed(encode(r.to_wire()), "receipt")
        assert stored == r and stored.verify(WORKER.public_key)
        assert Receipt.from_json(r.to_json()) == r


@pytest.mark.parametrize("forgery", BATCH_FORGERIES)
def test_a_receipt_forged_within_a_batch_is_refused_naming_why(forgery: str) -> None:
    stranger = Identity.generate()
    batch = signed_batch(WORKER, unsigned_receipts(3))
    roots = VerifiedRoots()
    assert batch[0].verify(WORKER.public_key, roots)  # its root is known good from now on
    forged = BATCH_FORGERIES[forgery](batch[1], stranger)
    problem = forged.problem(WORKER.public_key, roots)
    if forgery == "past_tree":
        assert problem == "has a batch proof whose index (5) is past its tree (2 levels)"
    else:
        assert problem is not None and problem.startswith("is not in a batch signed by the worker")
    assert not forged.verify(WORKER.public_key)  # and without the roots known


def test_a_batch_proof_longer_than_a_full_batch_needs_does_not_parse() -> None:
    r = signed_batch(WORKER, unsigned_receipts(2))[0]
    assert r.batch is not None
    for batch, field in (
        ({"index": 0, "path": [bytes(32)] * (MAX_BATCH_LEVELS + 1)}, "path"),
        ({"index": MAX_BATCH, "path": [bytes(32)] * MAX_BATCH_LEVELS}, "index"),
        ({"index": 0, "path": [bytes(31)]}, "path[0]"),
    ):
        with pytest.raises(SchemaError) as e:
            Receipt.from_wire({**r.to_wire(), "batch": batch}, "receipt")
        assert e.value.path == f"receipt.batch.{field}"
