"""The capacity challenge's mathematics (`resources.challenge`): the same matrices from the same
seed on any node, an exact product, a Merkle tree whose proofs hold for every row and fail for
anything tampered with, and the time an ad implies."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from p2psched.resources.challenge import (
    CPU_CORE_GFLOPS,
    SLOW_FACTOR,
    Matrices,
    MerkleTree,
    expected_seconds,
    matrix,
    proof_holds,
    row_bytes,
    size_for,
)
from p2psched.resources.profile import Gpu, Profile

SEED = bytes(range(32))


def rows_of(m: Matrices) -> list[bytes]:
    return [row_bytes(r) for r in m.product()]


def test_the_matrices_follow_from_the_seed_alone_and_are_small_integers() -> None:
    a = matrix(SEED, 33, b"A")
    assert a.shape == (33, 33) and a.dtype == np.float32
    assert a.min() >= -8 and a.max() <= 7 and np.array_equal(a, np.rint(a))
    assert np.array_equal(a, matrix(SEED, 33, b"A"))
    assert not np.array_equal(a, matrix(SEED, 33, b"B"))
    assert not np.array_equal(a, matrix(SEED[::-1], 33, b"A"))
    assert list(matrix(SEED, 16, b"A")[0][:6]) == [-6, -3, -4, 5, -1, -2]
    # Pinned: a change of the derivation would fail every honest worker of another version.
    digest = hashlib.sha256(matrix(SEED, 16, b"A").astype("<i1").tobytes()).hexdigest()
    assert digest == KNOWN_A16


# SHAKE-256 of (domain, "A", n, seed) starts 25 4d 76: entries 2-8, 5-8, 4-8, 13-8, 7-8, 6-8.
KNOWN_A16 = "cb2e24b7522ba68459c7e0b201c201d370a5c0e3a9c8b011aaea448487f44bd5"


def test_the_float32_product_is_exact_as_integers() -> None:
    m = Matrices.of(SEED, 300)
    exact = m.a.astype(np.int64) @ m.b.astype(np.int64)
    assert np.array_equal(m.product().astype(np.int64), exact)
    assert m.row(7) == exact[7].astype("<i4").tobytes()


@pytest.mark.parametrize("n", [16, 17, 31, 64, 100])
def test_every_row_proves_its_way_to_the_root(n: int) -> None:
    rows = rows_of(Matrices.of(SEED, n))
    tree = MerkleTree(rows)
    m = Matrices.of(SEED, n)
    for i in range(n):
        assert m.problem(tree.root, i, rows[i], tree.proof(i)) is None


def test_tampering_with_a_row_or_its_proof_is_caught() -> None:
    n = 37
    m = Matrices.of(SEED, n)
    rows = rows_of(m)
    tree = MerkleTree(rows)
    i = 36  # the last row of an odd count: it goes up unpaired once
    proof = tree.proof(i)
    flipped = bytes([rows[i][0] ^ 1]) + rows[i][1:]
    assert m.problem(tree.root, i, flipped, proof) == f"row {i} is not row {i} of the product"
    assert (
        m.problem(tree.root, i, rows[i][:-4], proof)
        == f"row {i} has {4 * n - 4} bytes, not {4 * n}"
    )
    assert not proof_holds(tree.root, n, i, rows[i], [proof[0][::-1], *proof[1:]])
    assert not proof_holds(tree.root, n, i, rows[i], proof[:-1])
    assert not proof_holds(tree.root, n, i, rows[i], [*proof, proof[0]])
    assert not proof_holds(tree.root, n, 3, rows[i], proof)  # another row's place
    assert "proof does not lead to the committed root" in str(
        m.problem(tree.root, 3, rows[3], tree.proof(4))
    )


def test_a_product_that_is_right_but_a_root_over_other_rows_fails_the_proof() -> None:
    m = Matrices.of(SEED, 32)
    rows = rows_of(m)
    forged = MerkleTree([rows[0]] * 32)  # a root over rows the worker did not compute
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
    n = size_for(cpu, 1.0)
    assert expected_seconds(cpu, n) == pytest.approx(1.0, rel=0.01)
    big = Profile(cpu_model="x", cpu_cores=1, ram_gb=1.0, gpus=(Gpu("H100", 80),))
    assert size_for(big, 10.0) == 4096 and size_for(cpu, 1e-9) == 16
