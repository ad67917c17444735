"""Hostile workers over real channels: one that deals as a worker does until committed to
(then sends what it likes), and one a scheduler finds in the DHT like any other: its signed
ad, its own listener, its own handler."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import msgspec
import trio

from p2psched.dht.node import open_dht_node
from p2psched.identity import Identity, id_has_work, network_id_bits
from p2psched.wire.address import host_port, split_host_port
from p2psched.wire.channel import SecureChannel, serve_channels
from p2psched.wire.deal import Quote, Receipt, packed_hash
from p2psched.wire.messages import Commit, QuoteReply, QuoteRequest, Result, encode, parse
from p2psched.worker.advert import Advert
from tests.harness.net import ad


async def take_commitment(channel: SecureChannel, rogue: Identity) -> Commit:
    """Deal as a worker does on `channel`: quote (free) for what is asked, until committed to.
    The scheduler then takes results from it (it takes a few KiB from a worker that has not
    yet said what it is)."""
    while True:
        m = parse(await channel.receive_frame())
        if isinstance(m, Commit):
            return m
        if isinstance(m, QuoteRequest):
            peer = channel.peer.node_id
            quote = Quote(rogue.node_id, peer, m.job, 0.0, 0.0, 0.0, 0.0, m.tasks, 1e10)
            await channel.send_encoded([encode(QuoteReply(m.rid, quote.signed(rogue)))])


def result_of(commit: Commit, rogue: Identity, output: bytes) -> bytes:
    """A result for the first task of `commit`, whose output is `output` (MessagePack, not
    checked), with a receipt `rogue` signed for it as an honest worker would."""
    c = commit.commitment
    task = c.tasks[0]
    receipt = Receipt(
        rogue.node_id,
        c.scheduler,
        c.job,
        task,
        True,
        packed_hash(output),
        0.1,
        c.price,
        time.time(),
    ).signed(rogue)
    return encode(Result(task, msgspec.Raw(output), None, receipt))


@asynccontextmanager
async def advertised(
    gate: str,
    handle: Callable[[SecureChannel, Identity], Awaitable[None]],
    *,
    price: float = 0.0,
    drivers: tuple[str, ...] = ("echo",),
) -> AsyncIterator[Identity]:
    """A worker of the echo driver (or `drivers`), free (or at `price`: `harness.net.ad`),
    joined to the DHT through `gate` with a signed ad like any other's, whose channels `handle`
    serves (with its identity): it is what it says to schedulers that find it. Yields its
    identity."""
    rogue = Identity.generate()
    async with trio.open_nursery() as nursery:

        async def serve(channel: SecureChannel) -> None:
            await handle(channel, rogue)

        host, port = await nursery.start(serve_channels, rogue, serve)
        async with open_dht_node(rogue) as dht:
            assert await dht.bootstrap([split_host_port(gate)]) > 0
            profile = replace(ad(rogue, price, drivers).profile, addresses=(host_port(host, port),))
            await Advert(dht, profile).publish()
            yield rogue
        nursery.cancel_scope.cancel()


def free_identity() -> Identity:
    """An identity that cost nothing: made at id_bits 0, and failing the network's check."""
    for _ in range(1000):  # a free id passes a 4-bit check one time in 16
        identity = Identity.generate(0)
        if not id_has_work(identity.node_id, network_id_bits()):
            return identity
    raise AssertionError("every free identity passed the network's id check")
