"""Connections to a worker's (or any node's) channel listener: sockets left idle in their
handshake cannot pile up without bound nor lock a newcomer out, and one address cannot hold
more than its share of open channels."""

from __future__ import annotations

import trio

from p2psched.identity import Identity
from p2psched.wire import channel as channels
from p2psched.wire.channel import Doorkeeper, SecureChannel, open_channel, serve_channels


async def test_idle_handshakes_are_bounded_and_the_oldest_makes_room() -> None:
    me, stranger = Identity.generate(), Identity.generate()
    door = Doorkeeper()

    async def echo(ch: SecureChannel) -> None:
        async for message in ch:
            await ch.send(message)

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            lambda task_status: serve_channels(me, echo, doorkeeper=door, task_status=task_status)
        )
        idle = [await trio.open_tcp_stream(host, port) for _ in range(40)]
        await trio.sleep(0.3)
        assert door.handshakes <= channels.MAX_HANDSHAKES_PER_IP
        assert door.shed >= 40 - channels.MAX_HANDSHAKES_PER_IP
        # A newcomer from the same address is served: an idle one made room for it.
        async with open_channel(host, port, stranger, expected_peer=me.node_id) as ch:
            await ch.send({"t": "hi"})
            assert await ch.receive() == {"t": "hi"}
        for stream in idle:
            await stream.aclose()
        nursery.cancel_scope.cancel()


def test_one_address_holds_at_most_its_share_of_open_channels() -> None:
    door = Doorkeeper()
    assert all(door.admit("10.0.0.1") for _ in range(channels.MAX_CHANNELS_PER_IP))
    assert not door.admit("10.0.0.1")
    assert door.admit("10.0.0.2")  # another address is not affected
    door.leave("10.0.0.1")
    assert door.admit("10.0.0.1")
