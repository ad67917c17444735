"""The capacity challenge's mathematics, shared by the scheduler that checks and the worker
that answers: `rounds` products of n x n matrices from a seed (round j: A_j x B), the Merkle
tree over all their rows (`wire.merkle`), the check of one opened row, and the time a worker's
ad says the products should take.

Owns: how the matrices follow from the seed and the challenged worker's id (SHAKE-256, so any
two nodes derive the same ones whatever their numpy), the rows' byte form,
the table of conservative compute rates by CPU and GPU model, and how a challenge is sized
from an ad.
Promises: every entry is a small integer (-8..7), so every product entry is an integer of
magnitude at most 64 n, exact in float32 (and in TF32 inputs with float32 sums) on any device
and in any summation order: an honest product matches the check bit for bit. Each round's A_j
is fresh from the seed and j (B is shared: A_j B for every j is still rounds n^3
multiply-adds, as stacking the A_j into one tall matrix shows), so no round's product follows
from another's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from p2psched.resources.profile import Profile, gpu_family
from p2psched.wire.merkle import Domain
from p2psched.wire.merkle import MerkleTree as MerkleTree
from p2psched.wire.messages import MAX_CHALLENGE_N as MAX_N
from p2psched.wire.messages import MAX_CHALLENGE_ROUNDS as MAX_ROUNDS
from p2psched.wire.messages import MIN_CHALLENGE_N as MIN_N

SEED_BYTES = 32
_DOMAIN = b"p2psched/challenge/2"
ROWS = Domain(b"p2psched/challenge-rows")  # the tree over a challenge's rows

Matrix = npt.NDArray[np.float32]

# A byte's two entries, its high and its low four bits less 8: one gather derives a matrix.
_PAIRS = np.array([[hi - 8, lo - 8] for hi in range(16) for lo in range(16)], dtype=np.float32)


def _stream(seed: bytes, n: int, which: bytes, entries: int) -> Matrix:
    """The first `entries` entries (row-major) of matrix `which` of the challenge `seed`."""
    octets = hashlib.shake_256(_DOMAIN + which + n.to_bytes(4, "big") + seed).digest(
        (entries + 1) // 2
    )
    flat: Matrix = _PAIRS[np.frombuffer(octets, dtype=np.uint8)].reshape(-1)
    return flat[:entries]


def _name(which: bytes, round_: int | None) -> bytes:
    return which if round_ is None else which + round_.to_bytes(4, "big")


def matrix(seed: bytes, n: int, which: bytes, round_: int | None = None) -> Matrix:
    """Matrix `which` of the challenge `seed`, n x n: b"A" of round `round_`, or b"B" (every
    round's). Each byte of a SHAKE-256 stream gives two entries, its high and its low four
    bits, less 8."""
    return _stream(seed, n, _name(which, round_), n * n).reshape(n, n)


def worker_seed(seed: bytes, worker: bytes) -> bytes:
    """The seed a challenge's matrices come from: the scheduler's fresh `seed` bound to the
    challenged worker's id, so that no other worker's product (one the challenged worker got
    computed elsewhere, asking another as a scheduler with the same seed) answers it."""
    return hashlib.sha256(_DOMAIN + b"/worker" + worker + seed).digest()


def row_bytes(row: npt.NDArray[np.generic]) -> bytes:
    """A product row as it is hashed and sent: its entries as little-endian int32."""
    packed: bytes = np.rint(row).astype("<i4").tobytes()
    return packed


@dataclass(slots=True)
class Matrices:
    """A challenge's matrices, derived as rows are asked for (B once, each A_j up to the row
    asked): the scheduler checks opened rows with them, the worker sends them."""

    seed: bytes
    n: int
    rounds: int = 1
    _b: Matrix | None = field(default=None, repr=False)

    @property
    def b(self) -> Matrix:
        if self._b is None:
            self._b = matrix(self.seed, self.n, b"B")
        return self._b

    def a(self, round_: int) -> Matrix:
        return matrix(self.seed, self.n, b"A", round_)

    def row(self, index: int) -> bytes:
        """Row `index` (round j's row i at j n + i) of the products, in O(n^2)."""
        j, i = divmod(index, self.n)
        a_row = _stream(self.seed, self.n, _name(b"A", j), (i + 1) * self.n)[i * self.n :]
        return row_bytes(a_row @ self.b)

    def problem(self, root: bytes, index: int, row: bytes, proof: Sequence[bytes]) -> str | None:
        """Why an opened row does not hold (None if it does): its size, its value, its proof."""
        j, i = divmod(index, self.n)
        if len(row) != 4 * self.n:
            return f"row {i} of round {j} has {len(row)} bytes, not {4 * self.n}"
        if row != self.row(index):
            return f"row {i} of round {j} is not row {i} of that round's product"
        if not ROWS.holds(root, self.rounds * self.n, index, row, proof):
            return f"row {i} of round {j}'s proof does not lead to the committed root"
        return None


def flops(n: int) -> float:
    """Floating-point operations of an n x n product."""
    return 2.0 * n**3


# Conservative float32 rates (GFLOP/s), well under the peaks vendors quote, so that an honest
# worker passes with time to spare; a worker is much slower than its ad claims when it takes
# over `SLOW_FACTOR` times what its rate implies (plus each round's fixed work, and the
# scheduler's grace for the network).
CPU_CORE_GFLOPS = 16.0  # per core claimed: a few-year-old x86 core with AVX2 does 30-60 in numpy
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
TARGET_S = 3.0  # what a challenge's products should take by the ad, unless sized by hand
MOST_WORK_S = 10 * TARGET_S  # a worker takes no challenge its own ad gives longer than this
# Each round's fixed work, whatever the device: deriving A_j (SHAKE-256), and hashing its
# product's rows and their tree nodes, on one CPU core. Measured on a loaded 2-core machine
# (load 3 to 5): 0.34 s a round at n = 4096, 20 ns an entry; counted at 1.5 times that (more
# would let a CPU claiming many cores pass: one round of 4096 is 0.54 s of its allowance).
ENTRY_S = 30e-9
ROW_S = 4e-6


def claimed_gflops(profile: Profile) -> float:
    """What the ad implies one product runs at: its fastest GPU's rate, else its cores'."""
    gpus = [GPU_GFLOPS.get(gpu_family(g.model), GPU_DEFAULT_GFLOPS) for g in profile.gpus]
    return max(gpus, default=CPU_CORE_GFLOPS * max(1, profile.cpu_cores))


def expected_seconds(profile: Profile, n: int, rounds: int = 1) -> float:
    """How long the ad says `rounds` n x n products take here."""
    return rounds * flops(n) / (claimed_gflops(profile) * 1e9)


def fixed_seconds(n: int, rounds: int = 1) -> float:
    """The most `rounds` rounds' fixed work (`ENTRY_S`, `ROW_S`) takes an honest worker."""
    return rounds * (n * n * ENTRY_S + n * ROW_S)


def time_limit(profile: Profile, n: int, rounds: int, grace_s: float) -> float:
    """The most an answer may take: `SLOW_FACTOR` times what the ad implies for the products,
    their fixed work if the ad claims a GPU, and `grace_s` for the network.

    A GPU's products take a fraction of their fixed work, which its host's CPU does: it is
    counted. A CPU ad's fixed work is left within the factor's slack, as counting it would let
    2 fast cores pass for 64 (measured on a 2-core machine, idle: 0.92 s a round of 4096 with
    its fixed work, while a 64-core ad gets 4 x 0.13 s for the product, and 0.52 s more if
    the fixed work were counted); a real 64-core CPU does the product in about 0.1 s and the
    fixed work in 0.2-0.35 s, within its 0.54 s."""
    fixed = fixed_seconds(n, rounds) if profile.gpus else 0.0
    return SLOW_FACTOR * expected_seconds(profile, n, rounds) + fixed + grace_s


def size_for(profile: Profile, target_s: float, *, limit: int = MAX_N) -> tuple[int, int]:
    """The n and rounds whose products the ad says take about `target_s`: one product while
    n stays within MIN_N..`limit`, then rounds of `limit` x `limit` (at most MAX_ROUNDS)."""
    work = target_s * claimed_gflops(profile) * 1e9
    n = max(MIN_N, min(limit, int(round((work / 2.0) ** (1 / 3)))))
    if n < limit:
        return n, 1
    return n, max(1, min(MAX_ROUNDS, round(work / flops(n))))
