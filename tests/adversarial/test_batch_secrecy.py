"""What one worker learns from a commitment signed together with the rest of its commit round:
its own deal, and nothing of the deals the scheduler made with the round's other workers.

Before batches a commitment went only to the worker it names, so the price a scheduler pays a
rival (that rival's quote to it, never published) stayed between the two. A batch proof gives
each worker the sibling hashes on its leaf's path. If a leaf is a plain hash of a
commitment's body, a worker can confirm guesses about its neighbour's offline, at one hash per
guess: the rival's id comes from the DHT, the tasks from the job's, the price from a short
list, and issued_at is the same for the whole round."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import msgspec

from p2psched.identity import Identity
from p2psched.scheduler.run import JobRun
from p2psched.wire.codec import decode, encode
from p2psched.wire.deal import BatchProof, Commitment
from p2psched.wire.messages import Commit
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, spec


def _first_round(prices: list[float], tasks: int) -> tuple[Net, dict[bytes, Commitment]]:
    """A run's first commit round to workers at `prices`: the commitment each worker got."""
    sched = Identity.generate()
    ids = [Identity.generate() for _ in prices]
    got: dict[bytes, Commitment] = {}

    class Watched(wm.TaskManager):
        def receive(self, peer: bytes, message: Any, now: float) -> None:
            if isinstance(message, Commit):
                got.setdefault(self.identity.node_id, message.commitment)
            super().receive(peer, message, now)

    workers: dict[bytes, wm.TaskManager] = {
        i.node_id: Watched(i, slots=2, queue_depth=2, price=p)
        for i, p in zip(ids, prices, strict=True)
    }
    run = JobRun(sched, "job", [spec(k) for k in range(tasks)], mtr=math.inf, now=1000.0)
    net = Net(run, workers)
    run.add_workers([ad(i, p) for i, p in zip(ids, prices, strict=True)], net.now)
    net.pump()
    return net, got


def test_a_worker_cannot_confirm_a_guess_of_a_rivals_commitment_from_its_batch_proof() -> None:
    net, got = _first_round([0.5, 0.75], tasks=6)
    assert len(got) == 2, "both workers got a commitment in one round"
    mine, theirs = sorted(got)
    own = got[mine]
    assert isinstance(own.batch, BatchProof), "the round was signed as a batch"
    assert own.verify(net.run.identity.public_key)  # (its own deal it can prove)
    sibling = own.batch.path[0]  # (two leaves: the sibling is the rival's leaf)
    domain = Commitment.BATCH
    assert domain is not None
    # What the worker `mine` knows without being told: the job's task ids, the rivals in the
    # DHT and the prices their ads ask, the round's time and scheduler (its own commitment's).
    others = [f"job-{k:06d}" for k in range(6) if f"job-{k:06d}" not in own.tasks]
    confirmed = []
    for n in range(1, len(others) + 1):
        for tasks in itertools.combinations(others, n):
            for price in (0.5, 0.75):
                guess = msgspec.structs.replace(
                    own,
                    worker=theirs,
                    tasks=list(tasks),
                    price=price,
                    sig=b"",
                    batch=msgspec.UNSET,
                )
                if domain.leaf(guess.body()) == sibling:
                    confirmed.append((tasks, price))
    # The rival's deal (its tasks and the price it is paid) must not be recoverable.
    assert confirmed == [], f"worker learned its rival's commitment: {confirmed}"


def test_a_round_commitment_verifies_after_its_wire_json_and_ledger_forms() -> None:
    """Whatever a leaf is hashed with travels with its proof: a commitment of a round still
    verifies on its own after each form it is kept in."""
    net, got = _first_round([0.5, 0.75], tasks=6)
    key = net.run.identity.public_key
    for c in got.values():
        assert isinstance(c.batch, BatchProof)
        for kept in (
            Commitment.from_json(json.loads(json.dumps(c.to_json()))),
            Commitment.from_wire(decode(encode(c.to_wire())), "commitment"),
        ):
            assert kept == c and kept.verify(key)
        moved = msgspec.structs.replace(c, batch=msgspec.structs.replace(c.batch, salt=b""))
        assert not moved.verify(key)  # (nor without what its leaf was hashed with)
