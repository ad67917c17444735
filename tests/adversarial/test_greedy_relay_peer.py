"""A greedy peer against a running gate's relay: real sockets on loopback, real circuits to a
worker behind the gate, bytes counted where they arrive. Timed on trio's fake clock, so the
gate's bandwidth waits are exact and the machine's speed does not enter the figures."""

from __future__ import annotations

from collections import Counter

import pytest
import trio

from p2psched.gate.client import RelayClient, open_worker_channel
from p2psched.gate.relay import RelayLimits
from p2psched.gate.service import Gate
from p2psched.identity import Identity
from p2psched.wire.channel import SecureChannel
from tests.harness.network import gate_at

CAP = 1e6  # bytes per second through the gate's relay
CHUNK = b"x" * (1 << 16)
GREEDY_CIRCUITS = 4
SECONDS = 20.0  # of (virtual) time counted, after the circuits are all up


@pytest.mark.parametrize("modest_from", ["127.0.0.2", "127.0.0.1"], ids=["apart", "same NAT"])
async def test_a_modest_peer_keeps_its_share_against_a_greedy_one(
    autojump_clock: trio.abc.Clock, modest_from: str
) -> None:
    """A greedy scheduler pushes all it can on four circuits from 127.0.0.1, a modest one on
    one circuit from another address or from the same one (two machines behind one router):
    the modest one's bytes reach the worker at no less than 40 % of the gate's cap."""
    greedy, modest, worker = Identity.generate(), Identity.generate(), Identity.generate()
    received: Counter[bytes] = Counter()  # bytes the worker got, per sending peer
    counting = trio.Event()

    async def sink(channel: SecureChannel) -> None:
        async for message in channel:
            if counting.is_set():
                received[channel.peer.node_id] += len(message["pad"])

    async def push(me: Identity, address: str, local: str) -> None:
        async with open_worker_channel(
            address, me, expected_peer=worker.node_id, local_address=local
        ) as channel:
            while True:
                await channel.send({"t": "bulk", "pad": CHUNK})

    gate = Gate(Identity.generate(), RelayLimits(bandwidth=CAP))
    async with gate_at(gate) as (_, address), trio.open_nursery() as nursery:
        relayed = await nursery.start(RelayClient(worker, [address], sink).serve)
        for _ in range(GREEDY_CIRCUITS):
            nursery.start_soon(push, greedy, relayed, "127.0.0.1")
        nursery.start_soon(push, modest, relayed, modest_from)
        await trio.sleep(2.0)  # every circuit up and pushing
        assert gate.relay.circuits_open == (GREEDY_CIRCUITS + 1, 0)
        counting.set()
        await trio.sleep(SECONDS)
        counting = trio.Event()  # stop counting, then stop
        rates = {who: n / SECONDS for who, n in received.items()}
        nursery.cancel_scope.cancel()
    assert rates[modest.node_id] >= 0.4 * CAP, rates
    # The gate held all of them together to its cap (give or take a chunk in flight per
    # circuit, and the burst a peer starts with).
    assert sum(rates.values()) <= 1.1 * CAP, rates
