"""The node-wide budget of large messages being received: room is taken in turn and given back
when the message is read (or its channel closes), and a peer that holds room by sending slowly
loses its channel. On trio's fake clock, over in-memory streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from p2psched.identity import Identity
from p2psched.wire.channel import READ_SIZE, SecureChannel, secure_stream
from p2psched.wire.frame_budget import FrameBudget
from p2psched.wire.noise import ChannelError, SecureSession

MIB = 1 << 20


async def test_room_is_taken_in_turn_and_given_back(autojump_clock: trio.abc.Clock) -> None:
    budget = FrameBudget(3 * MIB, small=64 << 10)
    got: list[str] = []

    async def take(name: str, n: int) -> None:
        held = await budget.take(n)
        got.append(name)
        await trio.sleep(10)
        budget.give_back(held)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "a", 2 * MIB)
        await trio.sleep(1)
        nursery.start_soon(take, "b", 2 * MIB)  # must wait for a
        await trio.sleep(1)
        nursery.start_soon(take, "c", MIB // 2)  # would fit now, but waits behind b
        await trio.sleep(1)
        assert got == ["a"] and budget.held == 2 * MIB
        await trio.sleep(10)
        assert sorted(got) == ["a", "b", "c"] and budget.held == 2 * MIB + MIB // 2
    assert budget.held == 0 and budget.waits == 2


async def test_a_waiter_cancelled_gives_its_turn_away(autojump_clock: trio.abc.Clock) -> None:
    budget = FrameBudget(2 * MIB, small=64 << 10)
    first = await budget.take(2 * MIB)
    with trio.move_on_after(5):
        await budget.take(MIB)
    got = []

    async def take() -> None:
        got.append(await budget.take(MIB))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.sleep(1)
        assert not got
        budget.give_back(first)
    assert got == [MIB] and budget.held == MIB


@asynccontextmanager
async def pair(
    budget: FrameBudget,
) -> AsyncIterator[tuple[SecureChannel, SecureSession, trio.abc.Stream]]:
    """A channel that takes 16 MiB messages drawing on `budget`, and its peer's raw session
    and stream (to send part of a message)."""
    a, b = Identity.generate(), Identity.generate()
    near, far = trio.testing.memory_stream_pair()
    peer = SecureSession(a, initiator=True, expected_peer=b.node_id)
    async with trio.open_nursery() as nursery:

        async def dial() -> None:
            await far.send_all(peer.data_to_send())
            while peer.peer is None:
                peer.receive_data(await far.receive_some(READ_SIZE))
            await far.send_all(peer.data_to_send())

        nursery.start_soon(dial)
        async with secure_stream(near, b, initiator=False) as channel:
            channel.set_max_frame(16 * MIB, budget)
            await trio.sleep(0.1)
            yield channel, peer, far
            nursery.cancel_scope.cancel()


async def test_channels_hold_no_more_of_large_messages_than_the_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Three peers each send all but the end of a 2 MiB message: with a budget of 4 MiB, two
    channels read theirs; the third reads no further than the message's first bytes until one
    of the others is read."""
    budget = FrameBudget(4 * MIB, small=64 << 10)
    message = b"\xc6" + (2 * MIB - 5).to_bytes(4, "big") + bytes(2 * MIB - 5)  # msgpack bin
    async with pair(budget) as one, pair(budget) as two, pair(budget) as three:
        rests = []
        for _, peer, stream in (one, two, three):
            peer.seal(message)
            sealed = peer.data_to_send()
            await stream.send_all(sealed[:-1000])
            rests.append(sealed[-1000:])
            await trio.sleep(1)
        buffered = [len(channel._session._partial) for channel, _, _ in (one, two, three)]
        assert budget.held == 4 * MIB
        assert buffered[0] > MIB and buffered[1] > MIB, buffered
        assert buffered[2] <= 2 * READ_SIZE, buffered  # it stopped reading, waiting its turn
        # The first peer sends the rest and its message is read: the third may read on.
        await one[2].send_all(rests[0])
        assert await one[0].receive() == bytes(2 * MIB - 5)
        await three[2].send_all(rests[2])
        with trio.fail_after(30):
            assert await three[0].receive() == bytes(2 * MIB - 5)
        assert budget.held == 2 * MIB  # the second's, still coming


async def test_a_peer_that_sends_slowly_loses_its_room(autojump_clock: trio.abc.Clock) -> None:
    budget = FrameBudget(4 * MIB, small=64 << 10, min_rate=MIB, grace=5)
    message = b"\xc6" + (2 * MIB - 5).to_bytes(4, "big") + bytes(2 * MIB - 5)
    async with pair(budget) as (channel, peer, stream):
        peer.seal(message)
        sealed = peer.data_to_send()
        await stream.send_all(sealed[:MIB])
        await trio.sleep(1)
        assert budget.held == 2 * MIB
        with pytest.raises(ChannelError, match="came slower than"):
            with trio.fail_after(60):
                await channel.receive()
        assert budget.held == 0  # given back when the channel ended
