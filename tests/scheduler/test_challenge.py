"""The scheduler's side of a capacity challenge (`scheduler.challenge`), sans-I/O, against the
worker's real core (`worker.challenge.ChallengeDesk`) or a patched one; every message crosses
the codec and the schema, and time is the cores' `now`."""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec
import pytest

from p2psched.identity import Identity
from p2psched.resources.challenge import (
    ROWS,
    SLOW_FACTOR,
    TARGET_S,
    Matrices,
    flops,
    row_bytes,
    size_for,
)
from p2psched.resources.profile import Profile
from p2psched.scheduler.challenge import CapacityChallenge, challenge_job
from p2psched.store.journal import Accepted, Charged, Committed, Issued
from p2psched.wire.deal import Commitment, Receipt
from p2psched.wire.messages import (
    ChallengeAsk,
    ChallengeOpen,
    ChallengeRoot,
    ChallengeRows,
    Message,
    Send,
    encode,
    parse,
)
from p2psched.worker.challenge import ChallengeDesk, Compute, compute_products

SCHEDULER, WORKER = Identity.generate(), Identity.generate()
# One core claimed, no GPU: 16 GFLOP/s, so a 1024 x 1024 product takes 0.13 s by its ad.
ONE_CORE = Profile(cpu_model="x", cpu_cores=1, ram_gb=1.0, min_price=0.25)
T0 = 1000.0

Rows = Callable[[bytes, int, int], list[bytes]]  # seed, n, rounds: every round's rows


def wire(m: Message) -> Message:
    return parse(encode(m))


def start(
    n: int = 64, rows: int = 8, profile: Profile = ONE_CORE, rounds: int = 1
) -> CapacityChallenge:
    return CapacityChallenge(
        SCHEDULER,
        WORKER.node_id,
        WORKER.public_key,
        profile,
        rid=7,
        now=T0,
        n=n,
        rows=rows,
        rounds=rounds,
        rng=random.Random(1),
    )


def play(
    core: CapacityChallenge,
    desk: ChallengeDesk,
    *,
    took: float = 0.0,
    product: Rows | None = None,
    rewrite: Callable[[Message], Message] = lambda m: m,
) -> list[Message]:
    """Run the challenge to its end: the worker's products (`product`'s rows, which it
    commits to and opens; else honest) come `took` seconds after the ask; `rewrite` changes
    what the worker sends. What it sent."""
    sent: list[Message] = []
    now = T0
    rows: list[bytes] = []
    pending = [wire(s.message) for s in core.actions()]
    while pending and core.verdict is None:
        m = pending.pop(0)
        desk.receive(SCHEDULER.node_id, SCHEDULER.public_key, m, now)
        actions = desk.actions()
        for action in actions:
            if isinstance(action, Compute):
                if product is None:
                    tree, _ = compute_products(action.seed, action.n, action.rounds, gpu=False)
                else:
                    rows = product(action.seed, action.n, action.rounds)
                    tree = ROWS.tree_of(rows)
                now += took
                core.tick(now)
                desk.computed(action.peer, action.rid, tree, took)
        for a in [a for a in [*actions, *desk.actions()] if isinstance(a, Send)]:
            reply = a.message
            if product is not None and isinstance(reply, ChallengeRows):  # its rows, not ours
                assert isinstance(m, ChallengeOpen)
                reply = replace_rows(reply, rows=[rows[i] for i in m.rows])
            reply = wire(rewrite(reply))
            sent.append(reply)
            assert core.takes(reply)
            core.receive(reply, now)
            pending += [wire(s.message) for s in core.actions()]
    return sent


def honest(seed: bytes, n: int, rounds: int) -> list[bytes]:
    m = Matrices(seed, n, rounds)
    return [row_bytes(r) for j in range(rounds) for r in m.a(j) @ m.b]


def test_an_honest_worker_passes_and_is_paid_in_both_ledgers() -> None:
    core = start()
    desk = ChallengeDesk(WORKER, price=0.25, durable=True)
    sent = play(core, desk)
    v = core.verdict
    assert v is not None and v.passed and v.reason is None and not v.refused
    assert v.measured_s == 0.0 and v.n == 64 and v.rows == 8
    assert [type(m) for m in sent] == [ChallengeRoot, ChallengeRows]
    committed, charged = core.journal
    assert isinstance(committed, Committed) and isinstance(charged, Charged)
    assert committed.commitment.job == challenge_job(WORKER.node_id)
    assert charged.receipt.price == 0.25 and not charged.keep
    accepted, issued = desk.journal
    assert isinstance(accepted, Accepted) and isinstance(issued, Issued)
    assert issued.receipt == charged.receipt


def test_the_rows_are_picked_only_once_the_root_is_in_and_at_random() -> None:
    core = start(n=256)
    ask = core.actions()[0].message
    assert isinstance(ask, ChallengeAsk)
    assert core.actions() == []  # nothing opened before the root
    core.receive(ChallengeRoot(7, b"r" * 32, 0.0), T0 + 0.1)
    (opened,) = core.actions()
    assert isinstance(opened.message, ChallengeOpen)
    other = start(n=256)
    other.rng = random.Random(2)
    other.receive(ChallengeRoot(7, b"r" * 32, 0.0), T0 + 0.1)
    assert opened.message.rows != other.actions()[1].message.rows  # type: ignore[union-attr]


def test_a_worker_that_computes_only_some_rows_is_caught() -> None:
    def a_tenth(seed: bytes, n: int, rounds: int) -> list[bytes]:
        rows = honest(seed, n, rounds)
        return [r if i % 10 == 0 else bytes(len(r)) for i, r in enumerate(rows)]

    for seed in range(20):  # the rows opened: a fresh draw each time
        core = start(n=100)
        core.rng = random.Random(seed)
        play(core, ChallengeDesk(WORKER, price=0.25), product=a_tenth)
        v = core.verdict
        assert v is not None and not v.passed and not v.refused
        assert "is not row" in str(v.reason) and "did not compute the product" in str(v.reason)
        assert not any(isinstance(e, Charged) for e in core.journal)  # not paid


def test_a_worker_that_skips_a_round_is_caught_by_the_rows_opened() -> None:
    """As many rows as rounds: one is opened in every round, so a round skipped (its rows
    made up, the other rounds right) is caught whatever rows are drawn."""

    def skips_round_2(seed: bytes, n: int, rounds: int) -> list[bytes]:
        rows = honest(seed, n, rounds)
        return [bytes(len(r)) if i // n == 2 else r for i, r in enumerate(rows)]

    for seed in range(10):
        core = start(n=32, rows=4, rounds=4)
        core.rng = random.Random(seed)
        play(core, ChallengeDesk(WORKER, price=0.25), product=skips_round_2)
        v = core.verdict
        assert v is not None and not v.passed and v.rounds == 4
        assert "of round 2 is not row" in str(v.reason), v.reason
    honest_core = start(n=32, rows=4, rounds=4)
    play(honest_core, ChallengeDesk(WORKER, price=0.25), product=honest)
    assert honest_core.verdict is not None and honest_core.verdict.passed


def test_the_rows_opened_spread_over_the_rounds() -> None:
    core = start(n=64, rows=8, rounds=20)
    core.receive(ChallengeRoot(7, b"r" * 32, 0.0), T0 + 0.1)
    opened = core.actions()[-1]  # (after the ask)
    assert isinstance(opened.message, ChallengeOpen)
    rounds = [i // 64 for i in opened.message.rows]
    assert len(set(rounds)) == 8 and max(opened.message.rows) < 20 * 64
    every = start(n=16, rows=12, rounds=3)  # more rows than rounds: every round, then anywhere
    every.receive(ChallengeRoot(7, b"r" * 32, 0.0), T0 + 0.1)
    opened = every.actions()[-1]
    assert isinstance(opened.message, ChallengeOpen)
    assert {i // 16 for i in opened.message.rows} == {0, 1, 2}
    assert len(set(opened.message.rows)) == 12


def test_a_worker_five_times_slower_than_its_ad_fails_and_one_as_fast_passes() -> None:
    n = 2048  # two rounds: 2.1 s at the 16 GFLOP/s its one core claims, well over the grace
    expected = start(n=n, rounds=2).expected_s
    assert expected > 2.0

    def no_work(seed: bytes, n: int, rounds: int) -> list[bytes]:  # (judged before any row)
        return [b""] * n * rounds

    slow = start(n=n, rounds=2)
    play(slow, ChallengeDesk(WORKER, price=0.25), took=5 * expected, product=no_work)
    v = slow.verdict
    assert v is not None and not v.passed and not v.refused
    assert "no product root within" in str(v.reason)
    # Its root comes after the limit, yet in the same step: it took too long.
    late = start(n=n, rounds=2)
    late.receive(ChallengeRoot(7, b"r" * 32, 0.1), T0 + 5 * expected)
    assert late.verdict is not None and "it took" in str(late.verdict.reason)
    assert "overstates its capacity" in str(late.verdict.reason)
    in_time = start(n=n, rounds=2)
    in_time.receive(ChallengeRoot(7, b"r" * 32, expected), T0 + expected)
    assert in_time.verdict is None and in_time.next_deadline() > T0 + expected
    assert in_time.limit_s == pytest.approx(
        SLOW_FACTOR * expected + in_time.grace_s  # (a CPU ad's fixed work: in the factor)
    )


def test_a_worker_that_admits_a_slow_product_fails() -> None:
    core = start(n=2048, rounds=2)
    core.receive(ChallengeRoot(7, b"r" * 32, 5 * core.expected_s), T0 + 0.5)
    assert core.verdict is not None and "says it took" in str(core.verdict.reason)


def test_no_rows_after_the_root_fail_at_the_deadline() -> None:
    core = start()
    core.receive(ChallengeRoot(7, b"r" * 32, 0.0), T0 + 0.1)
    deadline = core.next_deadline()
    core.tick(deadline - 0.001)
    assert core.verdict is None
    core.tick(deadline)
    assert core.verdict is not None and "opened rows did not come" in str(core.verdict.reason)


def test_a_tampered_proof_is_caught() -> None:
    def bad_proof(m: Message) -> Message:
        if isinstance(m, ChallengeRows):
            proofs = [list(p) for p in m.proofs]
            proofs[3][0] = bytes(32)
            return replace_rows(m, proofs=proofs)
        return m

    core = start()
    play(core, ChallengeDesk(WORKER, price=0.25), rewrite=bad_proof)
    assert core.verdict is not None and not core.verdict.passed
    assert "proof does not lead to the committed root" in str(core.verdict.reason)


def test_rows_other_than_those_opened_are_caught() -> None:
    def shifted(m: Message) -> Message:
        if isinstance(m, ChallengeRows):
            return replace_rows(m, rows=m.rows[1:] + m.rows[:1])
        return m

    core = start()
    play(core, ChallengeDesk(WORKER, price=0.25), rewrite=shifted)
    assert core.verdict is not None and not core.verdict.passed


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"price": 0.5}, "charges 0.5, over the 0.25 committed"),
        ({"result_hash": bytes(32)}, "does not name the root it committed to"),
        ({"task": "challenge-x/1"}, "is not for this challenge"),
    ],
)
def test_a_receipt_not_for_what_was_committed_is_not_paid(change: dict, said: str) -> None:
    def forged(m: Message) -> Message:
        if isinstance(m, ChallengeRows):
            receipt = msgspec.structs.replace(m.receipt, **change).signed(WORKER)
            return replace_rows(m, receipt=receipt)
        return m

    core = start()
    play(core, ChallengeDesk(WORKER, price=0.25), rewrite=forged)
    assert core.verdict is not None and not core.verdict.passed
    assert core.verdict.reason == f"its receipt {said}"
    assert not any(isinstance(e, Charged) for e in core.journal)


def test_a_declined_challenge_is_a_refusal_that_says_nothing_of_capacity() -> None:
    busy = "busy: 2 tasks held here"
    refused = start()
    desk = ChallengeDesk(WORKER, price=0.25)
    desk.receive(
        SCHEDULER.node_id, SCHEDULER.public_key, refused.actions()[0].message, T0, busy=busy
    )
    (decline,) = desk.actions()
    refused.receive(wire(decline.message), T0)  # type: ignore[union-attr]
    v = refused.verdict
    assert v is not None and v.refused and not v.passed and busy in str(v.reason)


def test_a_decline_after_its_root_is_a_failure_not_a_refusal() -> None:
    """A worker that commits to a root, then will not open it, fails (else a made-up root,
    then a decline, would cost it nothing on its record)."""
    from p2psched.wire.messages import Decline

    core = start()
    core.receive(ChallengeRoot(7, b"r" * 32, 0.0), T0 + 0.1)
    core.receive(wire(Decline(7, "busy", True)), T0 + 0.2)
    v = core.verdict
    assert v is not None and not v.refused and not v.passed
    assert "declined to open the rows of its root" in str(v.reason)


def test_a_message_out_of_turn_fails_the_challenge() -> None:
    core = start()
    receipt = Receipt(WORKER.node_id, SCHEDULER.node_id, "j", "j/1", True, bytes(32), 0, 0, 0)
    core.receive(ChallengeRows(7, [], [], receipt.signed(WORKER)), T0 + 0.1)
    assert core.verdict is not None and "out of turn" in str(core.verdict.reason)


def test_rows_to_open_are_within_the_product_and_the_bound() -> None:
    with pytest.raises(ValueError, match="rows: between 1 and 16"):
        start(n=16, rows=17)
    with pytest.raises(ValueError, match="rows: between 1 and 64"):
        start(n=512, rows=65)
    with pytest.raises(ValueError, match="rounds: between 1 and 64"):
        start(n=512, rounds=65)
    assert start(n=16, rows=32, rounds=2).rows == 32  # every round's rows may be opened


def replace_rows(m: ChallengeRows, **fields: object) -> ChallengeRows:
    return msgspec.structs.replace(m, **fields)


def test_a_64_core_claim_is_sized_in_rounds_and_fails_at_the_pace_of_2_cores() -> None:
    """Sized by the claim (`Dispatcher.challenge`'s rule): 64 cores at 16 GFLOP/s get 22
    rounds of 4096 x 4096 (~3 s by the ad, 12.8 s allowed); a root at 2 cores' pace (32
    GFLOP/s: 4.3 s a round, 94 s) fails on time, at the pace of what it claims it passes."""
    many = Profile(cpu_model="x", cpu_cores=64, ram_gb=1.0, min_price=0.25)
    n, rounds = size_for(many, TARGET_S)
    assert (n, rounds) == (4096, 22)
    at_2_cores = rounds * flops(n) / 32e9
    slow = start(n=n, rows=8, profile=many, rounds=rounds)
    assert slow.limit_s < at_2_cores / 3
    slow.tick(T0 + slow.limit_s)
    v = slow.verdict
    assert v is not None and not v.passed and not v.refused and v.rounds == 22
    assert "for 22 4096x4096 products: it overstates its capacity" in str(v.reason)
    honest = start(n=n, rows=8, profile=many, rounds=rounds)
    honest.receive(ChallengeRoot(7, b"r" * 32, honest.expected_s), T0 + honest.expected_s)
    assert honest.verdict is None  # (its rows opened next)
    assert isinstance(honest.actions()[-1].message, ChallengeOpen)


def test_a_worker_cannot_pass_on_another_workers_product() -> None:
    # A liar (no GPU, or no time) challenges an honest worker itself, as a scheduler, with
    # the seed and n it was sent, opens the rows it is asked for there, and answers with the
    # honest worker's root, rows and proofs under a receipt of its own: it passed, as having
    # computed what someone else did. The matrices now follow from the seed and the
    # challenged worker's id, so the honest worker computes a product of its own.
    liar, honest_worker = WORKER, Identity.generate()
    core = start()
    (ask,) = [wire(s.message) for s in core.actions()]
    assert isinstance(ask, ChallengeAsk)
    desk = ChallengeDesk(honest_worker)
    relayed = Commitment(
        scheduler=liar.node_id,
        worker=honest_worker.node_id,
        job="relay",
        tasks=["relay/1"],
        price=1.0,
        issued_at=T0,
    ).signed(liar)
    desk.receive(liar.node_id, liar.public_key, ChallengeAsk(1, ask.seed, ask.n, relayed), T0)
    (compute,) = desk.actions()
    assert isinstance(compute, Compute)
    rows = honest(compute.seed, compute.n, compute.rounds)
    desk.computed(liar.node_id, 1, ROWS.tree_of(rows), 0.01)
    (root,) = desk.actions()
    assert isinstance(root.message, ChallengeRoot)
    core.receive(wire(ChallengeRoot(ask.rid, root.message.root, 0.01)), T0 + 0.1)
    (opened,) = [wire(s.message) for s in core.actions()]
    assert isinstance(opened, ChallengeOpen)
    desk.receive(liar.node_id, liar.public_key, ChallengeOpen(1, opened.rows), T0 + 0.2)
    (answer,) = desk.actions()
    assert isinstance(answer.message, ChallengeRows)
    receipt = Receipt(
        worker=liar.node_id,
        scheduler=SCHEDULER.node_id,
        job=core.commitment.job,
        task=core.commitment.tasks[0],
        ok=True,
        result_hash=root.message.root,
        duration=0.01,
        price=core.commitment.price,
        finished_at=T0 + 0.2,
    ).signed(liar)
    rows = ChallengeRows(ask.rid, answer.message.rows, answer.message.proofs, receipt)
    core.receive(wire(rows), T0 + 0.3)
    v = core.verdict
    assert v is not None and not v.passed and "did not compute the product" in str(v.reason), v
