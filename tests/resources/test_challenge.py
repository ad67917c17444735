"""The capacity challenge's mathematics (`resources.challenge`): the same matrices from the same
seed on any node, each round's own, exact products, a Merkle tree over every round's rows whose
proofs hold for every row and fail for anything tampered with (in any round), the time an ad
implies, and the size of a challenge sized by the claim."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from p2psched.resources.challenge import (
    CPU_CORE_GFLOPS,
    ROWS,
    SLOW_FACTOR,
    Matrices,
    expected_seconds,
    fixed_seconds,
    flops,
    matrix,
    row_bytes,
    size_for,
    time_limit,
)
from p2psched.resources.profile import Gpu, Profile
from p2psched.wire.messages import MAX_CHALLENGE_PROOF, MAX_CHALLENGE_ROUNDS

SEED = bytes(range(32))


def rows_of(m: Matrices) -> list[bytes]:
    """Every round's product's rows, round by round (what an honest worker hashes)."""
    return [row_bytes(r) for j in range(m.rounds) for r in m.a(j) @ m.b]


def test_the_matrices_follow_from_the_seed_alone_and_are_small_integers() -> None:
    a = matrix(SEED, 33, b"A", 0)
    assert a.shape == (33, 33) and a.dtype == np.float32
    assert a.min() >= -8 and a.max() <= 7 and np.array_equal(a, np.rint(a))
    assert np.array_equal(a, matrix(SEED, 33, b"A", 0))
    assert not np.array_equal(a, matrix(SEED, 33, b"B"))
    assert not np.array_equal(a, matrix(SEED[::-1], 33, b"A", 0))
    assert not np.array_equal(a, matrix(SEED, 33, b"A", 1))  # each round its own
    assert list(matrix(SEED, 16, b"A", 0)[0][:6]) == [0, 0, -1, 2, -7, -1]
    # Pinned: a change of the derivation would fail every honest worker of another version.
    digest = hashlib.sha256(matrix(SEED, 16, b"A", 0).astype("<i1").tobytes()).hexdigest()
    assert digest == KNOWN_A16


# SHAKE-256 of (domain, "A", round 0, n, seed) starts 88 7a 17: entries 8-8, 8-8, 7-8, 10-8, ...
KNOWN_A16 = "155220acd30a8adaa52823f3475820b72f5ececd13952dc4ce6104bdc46a3e6b"


def test_the_float32_product_is_exact_as_integers() -> None:
    m = Matrices(SEED, 300, rounds=2)
    exact = m.a(1).astype(np.int64) @ m.b.astype(np.int64)
    assert np.array_equal((m.a(1) @ m.b).astype(np.int64), exact)
    assert m.row(300 + 7) == exact[7].astype("<i4").tobytes()  # round 1's row 7


@pytest.mark.parametrize("n", [16, 17, 31, 64, 100])
def test_every_row_proves_its_way_to_the_root(n: int) -> None:
    rows = rows_of(Matrices(SEED, n))
    tree = ROWS.tree_of(rows)
    m = Matrices(SEED, n)
    for i in range(n):
        assert m.problem(tree.root, i, rows[i], tree.proof(i)) is None


def test_tampering_with_a_row_or_its_proof_is_caught() -> None:
    n = 37
    m = Matrices(SEED, n)
    rows = rows_of(m)
    tree = ROWS.tree_of(rows)
    i = 36  # the last row of an odd count: padding is its pair
    proof = tree.proof(i)
    flipped = bytes([rows[i][0] ^ 1]) + rows[i][1:]
    assert m.problem(tree.root, i, flipped, proof) == (
        f"row {i} of round 0 is not row {i} of that round's product"
    )
    assert (
        m.problem(tree.root, i, rows[i][:-4], proof)
        == f"row {i} of round 0 has {4 * n - 4} bytes, not {4 * n}"
    )
    assert not ROWS.holds(tree.root, n, i, rows[i], [proof[0][::-1], *proof[1:]])
    assert not ROWS.holds(tree.root, n, i, rows[i], proof[:-1])
    assert not ROWS.holds(tree.root, n, i, rows[i], [*proof, proof[0]])
    assert not ROWS.holds(tree.root, n, 3, rows[i], proof)  # another row's place
    assert "proof does not lead to the committed root" in str(
        m.problem(tree.root, 3, rows[3], tree.proof(4))
    )


def test_a_product_that_is_right_but_a_root_over_other_rows_fails_the_proof() -> None:
    m = Matrices(SEED, 32)
    rows = rows_of(m)
    forged = ROWS.tree_of([rows[0]] * 32)  # a root over rows the worker did not compute
    assert m.problem(forged.root, 5, rows[5], forged.proof(5)) is not None


def test_the_time_an_ad_implies_follows_its_gpu_else_its_cores() -> None:
    cpu = Profile(cpu_model="x", cpu_cores=4, ram_gb=1.0)
    n = 1000
    assert expected_seconds(cpu, n) == pytest.approx(2e9 / (4 * CPU_CORE_GFLOPS * 1e9))
    a100 = Profile(cpu_model="x", cpu_cores=4, ram_gb=1.0, gpus=(Gpu("NVIDIA A100-SXM4-80GB", 80),))
    assert expected_seconds(a100, n) == pytest.approx(2e9 / 10_000e9)
    unknown = Profile(cpu_model="x", cpu_cores=4, ram_gb=1.0, gpus=(Gpu("Acme X1", 8),))
    assert expected_seconds(a100, n) < expected_seconds(unknown, n) < expected_seconds(cpu, n)
    assert SLOW_FACTOR < 5  # a worker 5x slower than its ad says is much slower than claimed


def test_the_size_for_a_target_time_stays_within_bounds() -> None:
    cpu = Profile(cpu_model="x", cpu_cores=1, ram_gb=1.0)
    n, rounds = size_for(cpu, 1.0)
    assert rounds == 1 and expected_seconds(cpu, n) == pytest.approx(1.0, rel=0.01)
    big = Profile(cpu_model="x", cpu_cores=1, ram_gb=1.0, gpus=(Gpu("H100", 80),))
    assert size_for(big, 10.0) == (4096, MAX_CHALLENGE_ROUNDS) and size_for(cpu, 1e-9) == (16, 1)


def test_a_claim_beyond_one_largest_product_is_sized_in_rounds_of_it() -> None:
    """64 cores claimed: one 4096 x 4096 product is 0.13 s of it, so 22 rounds make ~3 s; a
    CPU ad's limit leaves the rounds' fixed work in the factor's slack, a GPU ad's counts it
    once, not `SLOW_FACTOR` times."""
    many = Profile(cpu_model="x", cpu_cores=64, ram_gb=1.0)
    n, rounds = size_for(many, 3.0)
    assert (n, rounds) == (4096, 22)
    assert expected_seconds(many, n, rounds) == pytest.approx(3.0, rel=0.05)
    expected = rounds * flops(n) / (64 * CPU_CORE_GFLOPS * 1e9)
    assert time_limit(many, n, rounds, 1.0) == pytest.approx(SLOW_FACTOR * expected + 1.0)
    gpu = Profile(cpu_model="x", cpu_cores=1, ram_gb=1.0, gpus=(Gpu("NVIDIA A100", 80),))
    n, rounds = size_for(gpu, 3.0)
    assert (n, rounds) == (4096, MAX_CHALLENGE_ROUNDS)  # (its fixed work: ~34 s of them)
    assert time_limit(gpu, n, rounds, 1.0) == pytest.approx(
        SLOW_FACTOR * expected_seconds(gpu, n, rounds) + fixed_seconds(n, rounds) + 1.0
    )
    assert fixed_seconds(n, 2) == 2 * fixed_seconds(n, 1) > 0


def test_rows_prove_their_way_to_one_root_across_rounds() -> None:
    n, rounds = 20, 5
    m = Matrices(SEED, n, rounds)
    rows = rows_of(m)
    tree = ROWS.tree_of(rows)
    for index in (0, n - 1, n, 2 * n + 7, rounds * n - 1):
        assert m.problem(tree.root, index, rows[index], tree.proof(index)) is None
        assert m.row(index) == rows[index]
    # Each round is its own product: round 3's row 7 is no other round's.
    assert len({rows[j * n + 7] for j in range(rounds)}) == rounds
    assert len(tree.proof(rounds * n - 1)) <= MAX_CHALLENGE_PROOF
    # A row of round 3 tampered with is caught, named by its round.
    j, i = 3, 7
    bad = bytes([rows[j * n + i][0] ^ 1]) + rows[j * n + i][1:]
    assert m.problem(tree.root, j * n + i, bad, tree.proof(j * n + i)) == (
        "row 7 of round 3 is not row 7 of that round's product"
    )
    # Round 2's right row offered in round 3's place: its value is round 2's, not round 3's.
    moved = m.problem(tree.root, 3 * n + i, rows[2 * n + i], tree.proof(2 * n + i))
    assert moved == "row 7 of round 3 is not row 7 of that round's product"
    # The tree is over all rounds: one round's tree alone does not pass.
    alone = ROWS.tree_of(rows[:n])
    assert m.problem(alone.root, 5, rows[5], alone.proof(5)) is not None


def test_the_longest_proof_fits_the_messages_bound() -> None:
    leaves = [bytes(32)] * (MAX_CHALLENGE_ROUNDS * 4096)
    assert len(ROWS.tree(leaves).proof(len(leaves) - 1)) <= MAX_CHALLENGE_PROOF == 18
