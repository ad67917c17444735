"""The worker's side of a capacity challenge (`worker.challenge`), sans-I/O: which challenges
it takes (not while busy, at most one per scheduler per interval, only signed and paid, none
with more work than its own ad gives a challenge), and what it answers with: rows of any round,
recomputed when opened."""

from __future__ import annotations

import pytest

from p2psched.identity import Identity
from p2psched.resources.challenge import ROWS, Matrices, worker_seed
from p2psched.wire.deal import Commitment
from p2psched.wire.messages import (
    ChallengeAsk,
    ChallengeOpen,
    ChallengeRoot,
    ChallengeRows,
    Decline,
    Message,
    Send,
)
from p2psched.wire.schema import SchemaError
from p2psched.worker.challenge import MAX_KEPT, ChallengeDesk, Compute, compute_products

SCHEDULER, OTHER, WORKER = Identity.generate(), Identity.generate(), Identity.generate()
SEED = b"s" * 32
NO_ROWS = ROWS.tree([bytes(32)] * 32)  # a tree for a challenge whose rows are never opened


def ask(
    rid: int = 1, price: float = 1.0, by: Identity = SCHEDULER, rounds: int = 1, **c: object
) -> ChallengeAsk:
    fields = {"tasks": ["challenge-x/1"], "worker": WORKER.node_id} | c
    commitment = Commitment(
        scheduler=by.node_id,
        worker=fields["worker"],  # type: ignore[arg-type]
        job="challenge-x",
        tasks=fields["tasks"],  # type: ignore[arg-type]
        price=price,
        issued_at=1.0,
    ).signed(by)
    return ChallengeAsk(rid, SEED, 32, commitment, rounds)


def receive(
    desk: ChallengeDesk, m: Message, now: float, by: Identity = SCHEDULER, **kw: object
) -> list:
    desk.receive(by.node_id, by.public_key, m, now, **kw)  # type: ignore[arg-type]
    return desk.actions()


def declined(actions: list) -> Decline:
    (action,) = actions
    assert isinstance(action, Send) and isinstance(action.message, Decline)
    return action.message


def test_a_busy_worker_declines_saying_so_and_not_for_good() -> None:
    desk = ChallengeDesk(WORKER)
    d = declined(receive(desk, ask(), 0.0, busy="busy: 3 tasks held here"))
    assert d.busy and d.reason == "busy: 3 tasks held here"
    assert isinstance(receive(desk, ask(2), 1.0)[0], Compute)  # free again: taken


def test_one_challenge_per_scheduler_per_interval() -> None:
    desk = ChallengeDesk(WORKER, interval_s=600.0)
    assert isinstance(receive(desk, ask(1), 0.0)[0], Compute)
    desk.computed(SCHEDULER.node_id, 1, NO_ROWS, 0.1)
    desk.actions()
    d = declined(receive(desk, ask(2), 100.0))
    assert d.busy and "one capacity challenge per 600 s" in d.reason and "after 500 s" in d.reason
    assert isinstance(
        receive(desk, ask(3, by=OTHER), 150.0, by=OTHER)[0], Compute
    )  # another scheduler
    desk.computed(OTHER.node_id, 3, NO_ROWS, 0.1)
    desk.actions()
    assert declined(receive(desk, ask(4), 599.0)).busy
    assert isinstance(receive(desk, ask(5), 600.0)[0], Compute)


def test_one_product_is_computed_at_a_time() -> None:
    desk = ChallengeDesk(WORKER)
    assert isinstance(receive(desk, ask(1), 0.0)[0], Compute)
    d = declined(receive(desk, ask(2, by=OTHER), 1.0, by=OTHER))
    assert d.busy and "computing another capacity challenge" in d.reason


def test_a_product_still_computing_counts_after_its_scheduler_left_or_it_expired() -> None:
    # A scheduler that asks then hangs up (or whose product outlives keep_s) leaves the thread
    # computing: another ask must wait for it, or a crowd of identities asking and hanging up
    # runs as many products at once (each up to three 64 MiB matrices).
    desk = ChallengeDesk(WORKER, keep_s=60.0)
    assert isinstance(receive(desk, ask(1), 0.0)[0], Compute)
    desk.disconnected(SCHEDULER.node_id)
    d = declined(receive(desk, ask(2, by=OTHER), 1.0, by=OTHER))
    assert d.busy and "computing another capacity challenge" in d.reason
    desk.computed(SCHEDULER.node_id, 1, NO_ROWS, 0.1)  # its thread ends: no root for it
    assert desk.actions() == []
    assert isinstance(receive(desk, ask(3, by=OTHER), 2.0, by=OTHER)[0], Compute)
    desk.tick(100.0)  # kept past keep_s, still computing
    third = Identity.generate()
    d = declined(receive(desk, ask(4, by=third), 100.0, by=third))
    assert d.busy and "computing another capacity challenge" in d.reason


@pytest.mark.parametrize(
    ("m", "kw", "said"),
    [
        (ask(price=0.5), {}, "price 0.5 is below this worker's minimum 1"),
        (ask(by=OTHER), {}, "not signed by the scheduler on this channel"),
        (ask(worker=OTHER.node_id), {}, "names another worker"),
        (ask(tasks=["a/1", "a/2"]), {}, "names one task, not 2"),
        (ask(), {"refusal": "this worker serves only the schedulers it allows"}, "only the"),
    ],
    ids=["price", "signer", "worker", "tasks", "policy"],
)
def test_a_challenge_it_must_not_take_is_declined_for_good(
    m: ChallengeAsk, kw: dict, said: str
) -> None:
    desk = ChallengeDesk(WORKER, price=1.0, durable=True)
    d = declined(receive(desk, m, 0.0, **kw))
    assert not d.busy and said in d.reason
    assert desk.journal == []  # nothing accepted, nothing earned


def test_it_opens_the_rows_asked_with_proofs_and_a_receipt_over_its_root() -> None:
    desk = ChallengeDesk(WORKER)
    (compute,) = receive(desk, ask(price=2.0, rounds=3), 0.0)
    assert compute.rounds == 3
    tree, seconds = compute_products(compute.seed, compute.n, compute.rounds, gpu=False)
    assert len(tree.levels[0]) == 3 * 32  # every round's rows, hashed: not the rows
    desk.computed(SCHEDULER.node_id, 1, tree, seconds)
    (root,) = desk.actions()
    assert isinstance(root.message, ChallengeRoot) and root.message.root == tree.root
    opened = [5, 0, 32 + 31, 2 * 32 + 7]  # rounds 0, 0, 1 and 2
    (answer,) = receive(desk, ChallengeOpen(1, opened), 1.0)
    m = answer.message
    assert isinstance(m, ChallengeRows)
    checks = Matrices(worker_seed(SEED, WORKER.node_id), 32, rounds=3)  # (bound to this worker)
    for i, row, proof in zip(opened, m.rows, m.proofs):
        assert checks.problem(root.message.root, i, row, proof) is None
    assert m.receipt.verify(WORKER.public_key) and m.receipt.result_hash == root.message.root
    assert m.receipt.price == 2.0 and m.receipt.task == "challenge-x/1"
    # Opened once: the product is gone.
    assert (
        "no product of that challenge" in declined(receive(desk, ChallengeOpen(1, [0]), 2.0)).reason
    )


def test_rows_past_the_product_or_of_no_challenge_are_declined() -> None:
    desk = ChallengeDesk(WORKER)
    receive(desk, ask(), 0.0)
    assert "no product" in declined(receive(desk, ChallengeOpen(1, [0]), 0.5)).reason  # computing
    desk.computed(SCHEDULER.node_id, 1, NO_ROWS, 0.1)
    desk.actions()
    said = declined(receive(desk, ChallengeOpen(1, [32]), 1.0)).reason
    assert "row 32 is out of range: the 1 products have 32 rows" in said
    assert "no product" in declined(receive(desk, ChallengeOpen(9, [0]), 1.0)).reason


def test_products_are_kept_for_a_while_and_few_at_once() -> None:
    desk = ChallengeDesk(WORKER, keep_s=60.0, interval_s=1.0)
    for rid in range(MAX_KEPT + 1):
        receive(desk, ask(rid), float(rid))
        desk.computed(SCHEDULER.node_id, rid, NO_ROWS, 0.1)
        desk.actions()
    assert "no product" in declined(receive(desk, ChallengeOpen(0, [0]), 10.0)).reason  # oldest
    assert desk.next_deadline() == 1.0 + 60.0
    desk.tick(61.0)
    assert "no product" in declined(receive(desk, ChallengeOpen(1, [0]), 61.0)).reason  # expired
    assert isinstance(receive(desk, ChallengeOpen(2, [0]), 61.0)[0].message, ChallengeRows)


def test_a_worker_takes_no_worker_message_of_a_challenge() -> None:
    with pytest.raises(SchemaError, match="does not take 'challenge-root'"):
        ChallengeDesk(WORKER).receive(
            SCHEDULER.node_id, SCHEDULER.public_key, ChallengeRoot(1, bytes(32), 0.0), 0.0
        )


def test_a_challenge_over_what_its_own_ad_gives_one_is_declined_for_good() -> None:
    """One core claimed (16 GFLOP/s): 64 rounds of 2048 x 2048 is 69 s of work by its own ad,
    over the 30 s it gives a challenge; 8 rounds (9 s) it takes."""
    commitment = ask().commitment
    desk = ChallengeDesk(WORKER, gflops=16.0, durable=True)
    d = declined(receive(desk, ChallengeAsk(1, SEED, 2048, commitment, 64), 0.0))
    assert not d.busy and "64 products of 2048x2048 take 69 s" in d.reason
    assert "over the 30 s it gives a challenge" in d.reason and desk.journal == []
    assert isinstance(receive(desk, ChallengeAsk(2, SEED, 2048, commitment, 8), 1.0)[0], Compute)
