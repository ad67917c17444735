"""The ledger's views: sums by job and by peer for both roles, and its verification, which
names each entry someone altered, from the signatures alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from msgspec.structs import replace as restruct

from p2psched.store import Store
from p2psched.store.journal import Accepted, Committed, Issued, Judged
from p2psched.wire.codec import encode
from p2psched.wire.deal import BatchProof, Commitment, Receipt, signed_batch
from tests.harness.store import (
    ME,
    OTHER_WORKER,
    SCHEDULER,
    WORKER,
    charged,
    commitment,
    honest_ledger,
    opened,
    receipt,
    sql,
)


def test_ledger_summary_adds_up_by_job_and_by_peer_for_both_roles(store: Store) -> None:
    out = encode("ok")
    store.write(
        [
            opened("a-1"),
            opened("b-1"),
            Committed(commitment("a-1", ["t0", "t1"], 2.0), ("w:1",), 1.0),
            Committed(commitment("b-1", ["t0"], 3.0, worker=OTHER_WORKER), ("o:1",), 1.0),
            charged("a-1", "t0", 2.0, "r0"),
            charged("a-1", "t1", 2.0, None, ok=False),  # failed: costs nothing
            charged("b-1", "t0", 3.0, "r", worker=OTHER_WORKER),
            # This node working for SCHEDULER: it accepted two tasks and issued one ok receipt.
            Accepted(
                commitment("x-9", ["x0", "x1"], 1.5, worker=ME, scheduler=SCHEDULER),
                SCHEDULER.public_key,
                1.0,
            ),
            Issued(receipt("x-9", "x0", 1.5, out, worker=ME, scheduler=SCHEDULER), 2.0),
            Issued(receipt("x-9", "x1", 1.5, out, ok=False, worker=ME, scheduler=SCHEDULER), 2.0),
        ]
    )

    summary = store.ledger_summary()
    assert summary["jobs"] == [
        {"job": "a-1", "committed": 4.0, "spent": 2.0, "tasks_paid": 1, "pending": 0,
         "disputed": 0},
        {"job": "b-1", "committed": 3.0, "spent": 3.0, "tasks_paid": 1, "pending": 0,
         "disputed": 0},
    ]  # fmt: skip
    peers = {p["peer"]: (p["spent"], p["earned"]) for p in summary["peers"]}
    assert peers == {
        WORKER.node_id.hex(): (2.0, 0.0),
        OTHER_WORKER.node_id.hex(): (3.0, 0.0),
        SCHEDULER.node_id.hex(): (0.0, 1.5),
    }
    assert (summary["spent"], summary["earned"]) == (5.0, 1.5)
    assert (store.spent("a-1"), store.spent("b-1"), store.spent("x-9")) == (2.0, 3.0, 0.0)
    assert store.verify_ledger() == []


def test_verify_ledger_names_the_entry_whose_document_was_altered(store: Store) -> None:
    store.write([opened("a-1")])
    honest_ledger(store)
    assert store.verify_ledger() == []
    [(seq, doc)] = sql(store, "SELECT seq, document FROM ledger WHERE kind = 'receipt'")
    # Flip one byte of the signature (the document's last bytes): still parses, must not verify.
    tampered = doc[:-1] + bytes([doc[-1] ^ 1])
    sql(store, "UPDATE ledger SET document = ? WHERE seq = ?", (tampered, seq))

    assert store.verify_ledger() == [
        f"ledger entry {seq} (paid receipt, job 'a-1'): the signature does not verify"
    ]


def test_verify_ledger_names_the_entry_whose_signer_key_was_swapped(store: Store) -> None:
    store.write([opened("a-1")])
    honest_ledger(store)
    sql(
        store,
        "UPDATE ledger SET signer_public_key = ? WHERE kind = 'receipt'",
        (OTHER_WORKER.public_key,),
    )

    [problem] = store.verify_ledger()
    assert "(paid receipt, job 'a-1')" in problem
    assert "the signer's key is not the key of the id it names" in problem


def test_verify_ledger_catches_columns_that_disagree_with_the_signed_document(
    store: Store,
) -> None:
    store.write([opened("a-1")])
    honest_ledger(store)
    [(seq,)] = sql(store, "SELECT seq FROM ledger WHERE kind = 'commitment'")
    sql(store, "UPDATE ledger SET amount = 99 WHERE seq = ?", (seq,))

    assert store.verify_ledger() == [
        f"ledger entry {seq} (paid commitment, job 'a-1'): "
        "stored columns differ from the signed document: amount"
    ]


def test_verify_ledger_catches_a_receipt_over_its_commitment(store: Store) -> None:
    store.write(
        [
            opened("a-1"),
            Committed(commitment("a-1", ["t0"], 1.0), (), 1.0),
            charged("a-1", "t0", 1.25, "r"),  # the worker signed more than was committed
            charged("a-1", "t9", 1.0, "r"),  # no commitment names t9
        ]
    )

    problems = store.verify_ledger()
    assert len(problems) == 2
    assert "charges 1.25 for task 't0', over the 1.0 committed" in problems[0]
    assert "no commitment names task 't9'" in problems[1]


def test_an_own_signed_entry_cannot_be_checked_without_the_own_key(tmp_path: Path) -> None:
    with Store.open(tmp_path / "node.db") as store:
        store.write([opened("a-1"), Committed(commitment("a-1", ["t0"], 1.0), (), 1.0)])
        [problem] = store.verify_ledger()
    assert "no public key to check the signature with" in problem
    with Store.open(tmp_path / "node.db", own_public_key=ME.public_key) as store:
        assert store.verify_ledger() == []


def test_receipts_pending_disputed_or_unsettled_are_not_spent_and_are_listed(
    store: Store,
) -> None:
    tasks = ["t0", "t0~2", "t1", "t1~2", "t2"]
    store.write(
        [
            opened("a-1"),
            Committed(commitment("a-1", tasks, 2.0), ("w:1",), 1.0),
            charged("a-1", "t0", 2.0, "r"),  # a plain receipt: spent
            *(charged("a-1", t, 2.0, "r", verdict="pending") for t in tasks[1:]),
        ]
    )
    assert store.ledger_summary()["spent"] == 2.0  # pending receipts are not spent yet
    store.write(
        [
            Judged("a-1", "t0~2", "agreed", 20.0),
            Judged("a-1", "t1", "disputed", 20.0),
            Judged("a-1", "t1~2", "unsettled", 20.0),
        ]
    )  # t2 still pending

    summary = store.ledger_summary()
    assert summary["jobs"] == [
        {"job": "a-1", "committed": 10.0, "spent": 4.0, "tasks_paid": 2, "pending": 1,
         "disputed": 2},
    ]  # fmt: skip
    assert summary["peers"] == [
        {"peer": WORKER.node_id.hex(), "spent": 4.0, "earned": 0.0, "disputed": 2}
    ]
    assert summary["spent"] == 4.0 and store.spent("a-1") == 4.0
    assert [j.spent for j in store.jobs()] == [4.0]  # as `jobs` lists it
    assert [(d["task"], d["verdict"], d["amount"]) for d in summary["disputed"]] == [
        ("t1~2", "unsettled", 2.0),
        ("t1", "disputed", 2.0),
    ]
    assert store.verify_ledger() == []  # the verdict is ours: every signature still holds


def test_a_verdict_on_no_pending_receipt_is_refused_naming_it(store: Store) -> None:
    store.write([opened("a-1"), Committed(commitment("a-1", ["t0"], 2.0), ("w:1",), 1.0)])
    store.write([charged("a-1", "t0", 2.0, "r")])  # a plain receipt: nothing to judge
    with pytest.raises(ValueError, match="a verdict names no receipt charged pending: a-1/t0"):
        store.write([Judged("a-1", "t0", "disputed", 20.0)])
    assert store.ledger_summary()["spent"] == 2.0


def test_commitments_signed_with_their_round_verify_in_the_ledger_and_a_swapped_proof_does_not(
    store: Store,
) -> None:
    """A commit round's commitments share one signature: each, kept in the ledger with its
    proof, verifies on its own; one stored with the other's proof is named."""
    a, b = signed_batch(
        ME,
        [
            Commitment(ME.node_id, w.node_id, "a-1", [f"a-1-00000{i}"], 0.5, 1001.0)
            for i, w in enumerate((WORKER, OTHER_WORKER))
        ],
    )
    store.write([opened("a-1"), Committed(a, (), 1001.0), Committed(b, (), 1001.0)])
    assert store.verify_ledger() == []
    store.write([Committed(msgspec.structs.replace(a, batch=b.batch), (), 1002.0)])
    [problem] = store.verify_ledger()
    assert "(paid commitment, job 'a-1'): the signature does not verify" in problem


def test_receipts_signed_in_a_batch_each_verify_from_their_rows_and_an_edited_proof_does_not(
    store: Store,
) -> None:
    """A batch's receipts are paid each in its own row, receipt and proof: each verifies on
    its own; a row whose proof (its index) was edited names that entry alone."""
    paid = [charged("a-1", f"t{i}", 1.0, i) for i in range(3)]
    batch = signed_batch(WORKER, [restruct(c.receipt, sig=b"") for c in paid])
    store.write(
        [
            opened("a-1"),
            Committed(commitment("a-1", ["t0", "t1", "t2"], 1.0), (), 1.0),
            *(replace(c, receipt=r) for c, r in zip(paid, batch, strict=True)),
        ]
    )
    assert store.verify_ledger() == []
    rows = sql(store, "SELECT seq, document FROM ledger WHERE kind = 'receipt' ORDER BY seq")
    assert [Receipt.from_packed(doc, "r") for _, doc in rows] == batch
    seq, doc = rows[1]
    moved = restruct(batch[1], batch=BatchProof(0, batch[1].batch.path))  # type: ignore[union-attr]
    sql(store, "UPDATE ledger SET document = ? WHERE seq = ?", (encode(moved.to_wire()), seq))

    assert store.verify_ledger() == [
        f"ledger entry {seq} (paid receipt, job 'a-1'): the signature does not verify"
    ]
