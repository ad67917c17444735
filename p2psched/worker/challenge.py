"""A capacity challenge, the worker's side: `ChallengeDesk` (sans-I/O) decides whether to take
one, keeps the products' Merkle tree until their rows are opened (recomputing an opened row
then), and signs the receipt; `compute_products` multiplies, round by round (numpy on the CPU,
or CuPy or PyTorch on a GPU when the ad claims one and either is installed with a device).

Owns: which challenges this worker takes (not while it holds tasks, one computed at a time, at
most one per scheduler per `interval_s`, only under a commitment signed by the scheduler at
this worker's price, and none its own ad gives over `MOST_WORK_S`), and the trees of the
products it committed to (`MAX_KEPT`, each for `keep_s`: hashes only, one product's matrices
in memory at a time).
Promises: every challenge it takes is journaled (`Accepted`, then `Issued` with its receipt,
whose `result_hash` is the root it sent), as a task's deal is, so the ledger shows what it
earned; a declined one is answered with a `Decline` that says why.
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from p2psched.identity import Identity
from p2psched.resources.challenge import (
    CPU_CORE_GFLOPS,
    MOST_WORK_S,
    ROWS,
    Matrices,
    MerkleTree,
    flops,
    row_bytes,
    worker_seed,
)
from p2psched.store.journal import Accepted, Entry, Issued
from p2psched.wire.deal import Receipt
from p2psched.wire.messages import (
    ChallengeAsk,
    ChallengeOpen,
    ChallengeRoot,
    ChallengeRows,
    Decline,
    Message,
    Send,
    kind,
    said,
)
from p2psched.wire.schema import SchemaError

INTERVAL_S = 600.0  # one challenge per scheduler this often, at most (`[worker]` may say)
KEEP_S = 120.0  # a product waits this long for its rows to be opened
MAX_KEPT = 4  # trees waiting for rows to be opened (up to ~40 MB each), the oldest dropped


@dataclass(frozen=True, slots=True)
class Compute:
    """Compute the `rounds` products of `seed` (n x n; the ask's, bound to this worker:
    `worker_seed`), then call `ChallengeDesk.computed`."""

    peer: bytes
    rid: int
    seed: bytes
    n: int
    rounds: int = 1


@dataclass(slots=True)
class _Taken:
    ask: ChallengeAsk
    since: float
    tree: MerkleTree | None = None
    seconds: float = 0.0


@dataclass(slots=True)
class ChallengeDesk:
    """The challenges this worker takes: messages and `now` in, `actions()` out."""

    identity: Identity
    price: float = 0.0  # the least a challenge must be paid (the worker's price per task)
    interval_s: float = INTERVAL_S
    keep_s: float = KEEP_S
    durable: bool = False
    gflops: float = CPU_CORE_GFLOPS  # what this worker's ad implies it computes at
    journal: list[Entry] = field(default_factory=list)
    _last: dict[bytes, float] = field(default_factory=dict)  # scheduler -> when it last asked
    _taken: dict[tuple[bytes, int], _Taken] = field(default_factory=dict)
    # Products whose thread runs: until `computed`, whatever became of their challenge (its
    # scheduler gone, kept too long), so that leaving never frees the worker for another.
    _computing: set[tuple[bytes, int]] = field(default_factory=set)
    _out: list[Send | Compute] = field(default_factory=list)

    def actions(self) -> list[Send | Compute]:
        out, self._out = self._out, []
        return out

    @property
    def computing(self) -> bool:
        """Whether a challenge's product is being computed here."""
        return bool(self._computing)

    def next_deadline(self) -> float:
        return min((t.since + self.keep_s for t in self._taken.values()), default=math.inf)

    def tick(self, now: float) -> None:
        for key in [k for k, t in self._taken.items() if t.since + self.keep_s <= now]:
            del self._taken[key]
        for peer in [p for p, t in self._last.items() if t + self.interval_s <= now]:
            del self._last[peer]

    def receive(
        self,
        peer: bytes,
        public_key: bytes,
        message: Message,
        now: float,
        *,
        refusal: str | None = None,
        busy: str | None = None,
    ) -> None:
        """A challenge's message from a connected scheduler. `refusal`: why this worker
        serves it nothing (its operator's policy); `busy`: why it cannot take one now (tasks
        of its own). Raises `SchemaError` for a message that is no challenge's."""
        if isinstance(message, ChallengeAsk):
            self._on_ask(peer, public_key, message, now, refusal, busy)
        elif isinstance(message, ChallengeOpen):
            self._on_open(peer, message, now)
        else:
            raise SchemaError("t", f"a worker does not take {kind(message)!r} messages")

    def computed(self, peer: bytes, rid: int, tree: MerkleTree, seconds: float) -> None:
        """The products of a challenge taken from `peer` as `rid`: the tree over their rows,
        and how long they took. Its root goes back."""
        self._computing.discard((peer, rid))
        taken = self._taken.get((peer, rid))
        if taken is None:  # kept too long (or its scheduler left)
            return
        taken.tree, taken.seconds = tree, seconds
        kept = [k for k, t in self._taken.items() if t.tree is not None]
        for key in kept[: max(0, len(kept) - MAX_KEPT)]:  # (in the order they were taken)
            del self._taken[key]
        self._out.append(Send(peer, ChallengeRoot(rid, taken.tree.root, seconds)))

    def not_computed(self, peer: bytes, rid: int, why: str) -> None:
        """The products of a challenge taken from `peer` as `rid` could not be computed (out
        of memory, a device error): the challenge is declined, saying why."""
        self._computing.discard((peer, rid))
        if self._taken.pop((peer, rid), None) is not None:
            why = said(f"busy: it could not compute the product: {why}")
            self._out.append(Send(peer, Decline(rid, why, True)))

    def disconnected(self, peer: bytes) -> None:
        for key in [k for k in self._taken if k[0] == peer]:
            del self._taken[key]

    def _on_ask(
        self,
        peer: bytes,
        public_key: bytes,
        m: ChallengeAsk,
        now: float,
        refusal: str | None,
        busy: str | None,
    ) -> None:
        c = m.commitment
        reason = refusal
        if reason is None and (not c.verify(public_key) or c.scheduler != peer):
            reason = "the commitment is not signed by the scheduler on this channel"
        elif reason is None and c.worker != self.identity.node_id:
            reason = "the commitment names another worker"
        elif reason is None and len(c.tasks) != 1:
            reason = f"a challenge's commitment names one task, not {len(c.tasks)}"
        elif reason is None and c.price < self.price:
            reason = f"price {c.price:g} is below this worker's minimum {self.price:g}"
        elif reason is None and (s := m.rounds * flops(m.n) / (self.gflops * 1e9)) > MOST_WORK_S:
            reason = (
                f"{m.rounds} products of {m.n}x{m.n} take {s:.0f} s at the rate this worker's "
                f"ad claims, over the {MOST_WORK_S:g} s it gives a challenge"
            )
        if reason is None and busy is None:
            if self.computing:
                busy = "busy: it is computing another capacity challenge"
            elif (last := self._last.get(peer)) is not None and now < last + self.interval_s:
                busy = (
                    f"it takes one capacity challenge per {self.interval_s:g} s from a "
                    f"scheduler: the next from this one after {last + self.interval_s - now:.0f} s"
                )
        if reason is not None or busy is not None:
            why = reason if reason is not None else busy
            assert why is not None
            self._out.append(Send(peer, Decline(m.rid, said(why), reason is None)))
            return
        self._last[peer] = now
        self._taken[(peer, m.rid)] = _Taken(m, now)
        self._computing.add((peer, m.rid))
        if self.durable:
            self.journal.append(Accepted(c, public_key, now))
        seed = worker_seed(m.seed, self.identity.node_id)  # (this worker's, none other's)
        self._out.append(Compute(peer, m.rid, seed, m.n, m.rounds))

    def _on_open(self, peer: bytes, m: ChallengeOpen, now: float) -> None:
        taken = self._taken.get((peer, m.rid))
        if taken is None or taken.tree is None:
            why = "no product of that challenge is kept here (never asked, or kept too long)"
            self._out.append(Send(peer, Decline(m.rid, why, False)))
            return
        n, rounds = taken.ask.n, taken.ask.rounds
        if (bad := next((i for i in m.rows if i >= rounds * n), None)) is not None:
            why = f"row {bad} is out of range: the {rounds} products have {rounds * n} rows"
            self._out.append(Send(peer, Decline(m.rid, why, False)))
            return
        del self._taken[(peer, m.rid)]
        c = taken.ask.commitment
        receipt = Receipt(
            worker=self.identity.node_id,
            scheduler=peer,
            job=c.job,
            task=c.tasks[0],
            ok=True,
            result_hash=taken.tree.root,
            duration=taken.seconds,
            price=c.price,
            finished_at=now,
        ).signed(self.identity)
        if self.durable:
            self.journal.append(Issued(receipt, now))
        seed = worker_seed(taken.ask.seed, self.identity.node_id)
        matrices = Matrices(seed, n, rounds)  # (each row again, in O(n^2))
        rows = [matrices.row(i) for i in m.rows]
        proofs = [taken.tree.proof(i) for i in m.rows]
        self._out.append(Send(peer, ChallengeRows(m.rid, rows, proofs, receipt)))


def compute_products(seed: bytes, n: int, rounds: int, *, gpu: bool) -> tuple[MerkleTree, float]:
    """The tree over the rows (as `resources.challenge.row_bytes`) of the `rounds` products
    of `seed`, and the seconds they took with their fixed work: on a GPU when `gpu` and CuPy
    or PyTorch finds one, else with numpy. Only one product is held at a time: its rows'
    hashes are kept, not its rows. Blocking: run it in a thread."""
    started = time.perf_counter()
    matrices = Matrices(seed, n, rounds)
    leaves: list[bytes] = []
    for j in range(rounds):
        a = matrices.a(j)
        product = _on_gpu(a, matrices.b) if gpu else None
        if product is None:
            product = a @ matrices.b
        leaves.extend(ROWS.leaf(row_bytes(r)) for r in product)
    tree = ROWS.tree(leaves)
    return tree, time.perf_counter() - started


def _on_gpu(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
    """`a @ b` on the first GPU CuPy or PyTorch can use; None if neither can. (float32
    inputs of small integers: exact with TF32 too, whose 10-bit mantissa holds them.)"""
    try:
        cupy: Any = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() > 0:
            out: np.ndarray[Any, Any] = cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b))
            return out
    except Exception:  # not installed, or no device or driver: the next backend
        pass
    try:
        torch: Any = importlib.import_module("torch")
        if torch.cuda.is_available():
            on = torch.device("cuda")
            c = torch.from_numpy(a).to(on) @ torch.from_numpy(b).to(on)
            torch.cuda.synchronize()
            result: np.ndarray[Any, Any] = c.cpu().numpy()
            return result
    except Exception:  # as above: numpy it is
        pass
    return None
