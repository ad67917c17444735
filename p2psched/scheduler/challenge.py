"""A capacity challenge, the scheduler's side, sans-I/O: asks a worker for `rounds` products of
n x n matrices from a fresh seed, times its Merkle root against what its ad claims, opens k
rows picked at random once the root is in (spread over the rounds: every round when k is at
least their number), and checks each in O(n^2) with its proof.

Owns: one challenge's seed, its commitment (one task, at the worker's price, signed), its
deadlines, the rows it picks, and its `CapacityVerdict`.
Promises: it passes only if the root came within `SLOW_FACTOR` times what the ad implies
(plus the rounds' fixed work, and `grace_s` for the network), every opened row is that row of
its round's product and proves its way to the root, and the receipt is the worker's, for this
challenge, over that root, at no more than was committed; only then is the receipt journaled
as paid (`Charged`, no result kept). Messages and `now` in; `actions()` and `next_deadline()` out.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass, field

from p2psched.identity import Identity
from p2psched.resources.challenge import Matrices, expected_seconds, time_limit, worker_seed
from p2psched.resources.profile import Profile
from p2psched.store.journal import Charged, Committed, Entry
from p2psched.wire.deal import Commitment, Receipt, task_id_for
from p2psched.wire.messages import (
    MAX_CHALLENGE_ROUNDS,
    MAX_CHALLENGE_ROWS,
    ChallengeAsk,
    ChallengeOpen,
    ChallengeRoot,
    ChallengeRows,
    Decline,
    Message,
    Send,
    kind,
)

DEFAULT_N = 512
DEFAULT_ROWS = 8
GRACE_S = 1.0  # added to the time limit for the network (the fixed work is counted apart)
OPEN_S = 10.0  # for the opened rows to come back (no computing: sending, at most 1 MiB)


def challenge_job(worker: bytes) -> str:
    """The job a worker's challenges are booked under in the ledger (by no real job's name:
    those end in 8 hex digits, this in 16)."""
    return f"challenge-{worker.hex()[:16]}"


@dataclass(frozen=True, slots=True)
class CapacityVerdict:
    """How a challenge ended. `refused`: the worker declined it (busy, rate-limited, its
    policy): nothing is known of its capacity then, and `passed` is False."""

    worker: bytes
    passed: bool
    reason: str | None  # why it failed or was refused
    n: int
    rows: int
    expected_s: float  # what the worker's ad implies the products take
    limit_s: float  # the most its root could take to pass
    measured_s: float | None  # from the ask to the root, as this scheduler saw it
    claimed_s: float | None  # what the worker said the products took
    price: float
    refused: bool = False
    rounds: int = 1


@dataclass(slots=True)
class CapacityChallenge:
    """One challenge of one worker, started at `now` (its ask is the first action)."""

    identity: Identity
    worker: bytes
    worker_public_key: bytes
    profile: Profile  # the worker's ad: what it claims, and its price
    rid: int
    now: float
    n: int = DEFAULT_N
    rows: int = DEFAULT_ROWS
    rounds: int = 1
    grace_s: float = GRACE_S
    rng: random.Random = field(default_factory=random.SystemRandom)
    seed: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    journal: list[Entry] = field(default_factory=list)
    verdict: CapacityVerdict | None = None
    _out: list[Send] = field(default_factory=list)
    _root: bytes | None = None
    _opened: list[int] = field(default_factory=list)
    _measured: float | None = None
    _claimed: float | None = None
    _deadline: float = math.inf
    expected_s: float = field(init=False)
    limit_s: float = field(init=False)
    commitment: Commitment = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= MAX_CHALLENGE_ROUNDS:
            raise ValueError(f"rounds: between 1 and {MAX_CHALLENGE_ROUNDS}")
        if not 1 <= self.rows <= min(self.rounds * self.n, MAX_CHALLENGE_ROWS):
            raise ValueError(f"rows: between 1 and {min(self.rounds * self.n, MAX_CHALLENGE_ROWS)}")
        self.expected_s = expected_seconds(self.profile, self.n, self.rounds)
        self.limit_s = time_limit(self.profile, self.n, self.rounds, self.grace_s)
        job = challenge_job(self.worker)
        self.commitment = Commitment(
            scheduler=self.identity.node_id,
            worker=self.worker,
            job=job,
            tasks=[task_id_for(job, int(self.now * 1000))],
            price=self.profile.min_price,
            issued_at=self.now,
        ).signed(self.identity)
        self.journal.append(Committed(self.commitment, (), self.now))
        self._deadline = self.now + self.limit_s
        self._out.append(
            Send(
                self.worker,
                ChallengeAsk(self.rid, self.seed, self.n, self.commitment, self.rounds),
            )
        )

    def actions(self) -> list[Send]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float:
        return math.inf if self.verdict is not None else self._deadline

    def takes(self, message: Message) -> bool:
        """Whether `message` (from this worker) answers this challenge."""
        return isinstance(message, ChallengeRoot | ChallengeRows | Decline) and (
            message.rid == self.rid
        )

    def receive(self, message: Message, now: float) -> None:
        if self.verdict is not None:
            return
        if isinstance(message, Decline) and self._root is not None:
            # Committed to a root, then would not open it: as good as a made-up root.
            self._end(False, f"it declined to open the rows of its root: {message.reason}")
        elif isinstance(message, Decline):
            self._end(False, f"it declined the challenge: {message.reason}", refused=True)
        elif isinstance(message, ChallengeRoot) and self._root is None:
            self._on_root(message, now)
        elif isinstance(message, ChallengeRows) and self._root is not None:
            self._on_rows(message, now)
        else:
            self._end(False, f"it sent {kind(message)!r} out of turn")

    def tick(self, now: float) -> None:
        if self.verdict is None and now >= self._deadline:
            if self._root is None:
                self._end(
                    False,
                    f"no product root within {self.limit_s:.3g} s: its ad implies "
                    f"{self.expected_s:.3g} s for {self._products}: it overstates its capacity",
                )
            else:
                self._end(False, f"the opened rows did not come within {OPEN_S:g} s")

    def abandon(self, reason: str) -> None:
        """The channel went (or the node stops): the challenge ends unanswered."""
        if self.verdict is None:
            self._end(False, reason, refused=True)

    def _on_root(self, m: ChallengeRoot, now: float) -> None:
        self._measured, self._claimed = now - self.now, m.seconds
        if self._measured > self.limit_s:
            self._end(False, self._slow(self._measured, "took"))
            return
        if m.seconds > self.limit_s:
            self._end(False, self._slow(m.seconds, "says it took"))
            return
        self._root = m.root
        # Picked only now: a worker that knew them could compute those rows alone.
        self._opened = self._pick()
        self._deadline = now + OPEN_S
        self._out.append(Send(self.worker, ChallengeOpen(self.rid, self._opened)))

    def _pick(self) -> list[int]:
        """`rows` distinct rows, one in each of as many distinct rounds as there are rows (so
        a round skipped is opened for sure when rows >= rounds), the rest anywhere."""
        n, rounds = self.n, self.rounds
        spread = self.rng.sample(range(rounds), min(self.rows, rounds))
        picked = [j * n + self.rng.randrange(n) for j in spread]
        chosen = set(picked)
        while len(picked) < self.rows:
            if (index := self.rng.randrange(rounds * n)) not in chosen:
                chosen.add(index)
                picked.append(index)
        return picked

    @property
    def _products(self) -> str:
        size = f"{self.n}x{self.n}"
        return f"a {size} product" if self.rounds == 1 else f"{self.rounds} {size} products"

    def _slow(self, seconds: float, verb: str) -> str:
        return (
            f"it {verb} {seconds:.3g} s for {self._products}; its ad implies "
            f"{self.expected_s:.3g} s (limit {self.limit_s:.3g} s): it overstates its capacity"
        )

    def _on_rows(self, m: ChallengeRows, now: float) -> None:
        assert self._root is not None
        if len(m.rows) != len(self._opened) or len(m.proofs) != len(self._opened):
            self._end(False, f"it opened {len(m.rows)} rows, not the {len(self._opened)} asked")
            return
        matrices = Matrices(worker_seed(self.seed, self.worker), self.n, self.rounds)
        for index, row, proof in zip(self._opened, m.rows, m.proofs):
            if (problem := matrices.problem(self._root, index, row, proof)) is not None:
                self._end(False, f"{problem}: it did not compute the product it committed to")
                return
        if (problem := self._receipt_problem(m.receipt)) is not None:
            self._end(False, f"its receipt {problem}")
            return
        self.journal.append(Charged(m.receipt, self.worker_public_key, b"", now, keep=False))
        self._end(True, None)

    def _receipt_problem(self, r: Receipt) -> str | None:
        c = self.commitment
        if not r.verify(self.worker_public_key) or r.worker != self.worker:
            return "is not signed by the worker"
        if r.scheduler != self.identity.node_id or r.job != c.job or r.task != c.tasks[0]:
            return "is not for this challenge"
        if not r.ok or r.result_hash != self._root:
            return "does not name the root it committed to"
        if r.price > c.price:
            return f"charges {r.price:g}, over the {c.price:g} committed"
        return None

    def _end(self, passed: bool, reason: str | None, *, refused: bool = False) -> None:
        self.verdict = CapacityVerdict(
            self.worker,
            passed,
            reason,
            self.n,
            self.rows,
            self.expected_s,
            self.limit_s,
            self._measured,
            self._claimed,
            self.commitment.price,
            refused,
            self.rounds,
        )
