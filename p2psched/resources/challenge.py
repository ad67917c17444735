"""The capacity challenge's mathematics, shared by the scheduler that checks and the worker
that answers: two n x n matrices from a seed, the Merkle tree over their product's rows, the
check of one opened row, and the time a worker's ad says the product should take.

Owns: how the matrices follow from the seed and the challenged worker's id (SHAKE-256, so any
two nodes derive the same ones whatever their numpy), the rows' byte form, the tree's hashing,
and the table of conservative compute rates by CPU and GPU model.
Promises: every entry is a small integer (-8..7), so every product entry is an integer of
magnitude at most 64 n, exact in float32 (and in TF32 inputs with float32 sums) on any device
and in any summation order: an honest product matches the check bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from p2psched.resources.profile import Profile, gpu_family
from p2psched.wire.messages import MAX_CHALLENGE_N as MAX_N
from p2psched.wire.messages import MIN_CHALLENGE_N as MIN_N

SEED_BYTES = 32
_DOMAIN = b"p2psched/challenge/1"

Matrix = npt.NDArray[np.float32]


def matrix(seed: bytes, n: int, which: bytes) -> Matrix:
    """Matrix `which` (b"A" or b"B") of the challenge `seed`, n x n: each byte of a SHAKE-256
    stream gives two entries, its high and its low four bits, less 8."""
    stream = hashlib.shake_256(_DOMAIN + which + n.to_bytes(4, "big") + seed).digest(
        (n * n + 1) // 2
    )
    octets = np.frombuffer(stream, dtype=np.uint8)
    nibbles = np.empty(2 * len(octets), dtype=np.int8)
    nibbles[0::2] = octets >> 4
    nibbles[1::2] = octets & 0x0F
    return (nibbles[: n * n].reshape(n, n) - 8).astype(np.float32)


def worker_seed(seed: bytes, worker: bytes) -> bytes:
    """The seed a challenge's matrices come from: the scheduler's fresh `seed` bound to the
    challenged worker's id, so that no other worker's product (one the challenged worker got
    computed elsewhere, asking another as a scheduler with the same seed) answers it."""
    return hashlib.sha256(_DOMAIN + b"/worker" + worker + seed).digest()


def row_bytes(row: npt.NDArray[np.generic]) -> bytes:
    """A product row as it is hashed and sent: its entries as little-endian int32."""
    packed: bytes = np.rint(row).astype("<i4").tobytes()
    return packed


def leaf_hash(row: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + row).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """The SHA-256 tree over a product's rows (leaves tagged 0, nodes 1, so a node never
    passes for a leaf); an odd node at the end of a level goes up unpaired."""

    def __init__(self, rows: Sequence[bytes]) -> None:
        level = [leaf_hash(r) for r in rows]
        self.levels = [level]
        while len(level) > 1:
            up = [_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)
            level = up

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """The sibling hashes from row `index` up to the root."""
        out = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                out.append(level[sibling])
            index //= 2
        return out


def proof_holds(root: bytes, n: int, index: int, row: bytes, proof: Sequence[bytes]) -> bool:
    """Whether `proof` leads from row `index` (of `n`) to `root`."""
    node, size, used = leaf_hash(row), n, 0
    while size > 1:
        if index ^ 1 < size:
            if used >= len(proof):
                return False
            sibling = proof[used]
            used += 1
            node = _node_hash(sibling, node) if index % 2 else _node_hash(node, sibling)
        index //= 2
        size = (size + 1) // 2
    return used == len(proof) and node == root


@dataclass(frozen=True, slots=True)
class Matrices:
    """The challenge's two matrices, kept by the scheduler to check opened rows."""

    seed: bytes
    n: int
    a: Matrix
    b: Matrix

    @classmethod
    def of(cls, seed: bytes, n: int) -> Matrices:
        return cls(seed, n, matrix(seed, n, b"A"), matrix(seed, n, b"B"))

    def product(self) -> Matrix:
        """The whole product (what a worker computes; numpy on the CPU)."""
        return self.a @ self.b

    def row(self, index: int) -> bytes:
        """Row `index` of the product, in O(n^2)."""
        return row_bytes(self.a[index] @ self.b)

    def problem(self, root: bytes, index: int, row: bytes, proof: Sequence[bytes]) -> str | None:
        """Why an opened row does not hold (None if it does): its size, its value, its proof."""
        if len(row) != 4 * self.n:
            return f"row {index} has {len(row)} bytes, not {4 * self.n}"
        if row != self.row(index):
            return f"row {index} is not row {index} of the product"
        if not proof_holds(root, self.n, index, row, proof):
            return f"row {index}'s proof does not lead to the committed root"
        return None


def flops(n: int) -> float:
    """Floating-point operations of an n x n product."""
    return 2.0 * n**3


# Conservative float32 rates (GFLOP/s), well under the peaks vendors quote, so that an honest
# worker passes with time to spare; a worker is much slower than its ad claims when it takes
# over `SLOW_FACTOR` times what its rate implies (plus the scheduler's grace for the network).
CPU_CORE_GFLOPS = 8.0  # per core claimed: a few-year-old x86 core with AVX2, in numpy
GPU_GFLOPS: dict[str, float] = {
    "H100": 30_000.0,
    "A100": 10_000.0,
    "L40S": 25_000.0,
    "L4": 8_000.0,
    "A10": 10_000.0,
    "A10G": 10_000.0,
    "V100": 7_000.0,
    "T4": 3_000.0,
    "RTX4090": 30_000.0,
    "RTX4080": 20_000.0,
    "RTX3090": 12_000.0,
    "RTX3080": 10_000.0,
    "RTX3060": 4_000.0,
}
GPU_DEFAULT_GFLOPS = 2_000.0  # a GPU model not in the table
SLOW_FACTOR = 4.0


def claimed_gflops(profile: Profile) -> float:
    """What the ad implies one product runs at: its fastest GPU's rate, else its cores'."""
    gpus = [GPU_GFLOPS.get(gpu_family(g.model), GPU_DEFAULT_GFLOPS) for g in profile.gpus]
    return max(gpus, default=CPU_CORE_GFLOPS * max(1, profile.cpu_cores))


def expected_seconds(profile: Profile, n: int) -> float:
    """How long the ad says an n x n product takes here."""
    return flops(n) / (claimed_gflops(profile) * 1e9)


def size_for(profile: Profile, target_s: float, *, limit: int = MAX_N) -> int:
    """The n whose product the ad says takes about `target_s` (within MIN_N..`limit`)."""
    n = int(round((target_s * claimed_gflops(profile) * 1e9 / 2.0) ** (1 / 3)))
    return max(MIN_N, min(limit, n))
