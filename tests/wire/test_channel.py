"""The secure channel's trio shell, over real TCP and in memory: messages both ways, the
wrong node refused, timeouts, closing, and bounded buffers."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2psched.identity import Identity
from p2psched.wire.channel import (
    ChannelClosed,
    SecureChannel,
    open_channel,
    secure_stream,
    serve_channels,
)
from p2psched.wire.noise import ChannelError, SecureSession


async def test_messages_over_real_tcp_both_ways() -> None:
    server_id, client_id = Identity.generate(), Identity.generate()
    seen: list[bytes] = []

    async def echo(ch: SecureChannel) -> None:
        seen.append(ch.peer.node_id)
        async for message in ch:
            await ch.send({"echo": message})

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_channels, server_id, echo)
        async with open_channel(host, port, client_id, expected_peer=server_id.node_id) as ch:
            assert ch.peer.node_id == server_id.node_id
            payload = {"task": "t-1", "input": b"\x01" * (3 << 20)}
            await ch.send(payload)
            await ch.send([1, 2, 3])
            assert await ch.receive() == {"echo": payload}
            assert await ch.receive() == {"echo": [1, 2, 3]}
        nursery.cancel_scope.cancel()
    assert seen == [client_id.node_id]


async def test_dialling_the_wrong_node_over_tcp_is_refused() -> None:
    server_id, client_id, meant = Identity.generate(), Identity.generate(), Identity.generate()

    async def never(ch: SecureChannel) -> None:
        raise AssertionError("no channel should open")

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_channels, server_id, never)
        with pytest.raises(ChannelError, match="that was asked for"):
            async with open_channel(host, port, client_id, expected_peer=meant.node_id):
                pass
        nursery.cancel_scope.cancel()


async def test_nothing_listening_is_a_clear_error() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(ChannelClosed, match=f"cannot connect to 127.0.0.1:{port}"):
        async with open_channel("127.0.0.1", port, Identity.generate(), expected_peer=b"\x00" * 32):
            pass


async def test_silent_peer_times_out_the_handshake(autojump_clock: trio.abc.Clock) -> None:
    near, far = trio.testing.memory_stream_pair()
    with pytest.raises(ChannelError, match="no handshake from the peer within 10 s"):
        async with secure_stream(near, Identity.generate(), initiator=True):
            pass
    await far.aclose()


async def test_receive_after_the_peer_leaves_raises_closed() -> None:
    a, b = Identity.generate(), Identity.generate()
    s1, s2 = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def other_side() -> None:
            async with secure_stream(s2, b, initiator=False) as ch:
                await ch.send("bye")

        nursery.start_soon(other_side)
        async with secure_stream(s1, a, initiator=True, expected_peer=b.node_id) as ch:
            assert await ch.receive() == "bye"
            with pytest.raises(ChannelClosed):
                await ch.receive()


async def test_a_frame_that_comes_with_the_last_handshake_message_is_delivered() -> None:
    a, b = Identity.generate(), Identity.generate()
    near, far = trio.testing.memory_stream_pair()
    dialler = SecureSession(a, initiator=True, expected_peer=b.node_id)
    async with trio.open_nursery() as nursery:

        async def dial() -> None:
            await far.send_all(dialler.data_to_send())
            dialler.receive_data(await far.receive_some(65536))
            dialler.seal(b"\x81\xa1t\xa5first")  # msgpack {"t": "first"}
            await far.send_all(dialler.data_to_send())  # the last handshake message + a frame

        nursery.start_soon(dial)
        async with secure_stream(near, b, initiator=False) as ch:
            with trio.fail_after(5):
                assert await ch.receive() == {"t": "first"}


async def test_inbox_is_bounded_in_bytes_while_nobody_reads(
    autojump_clock: trio.abc.Clock,
) -> None:
    from p2psched.wire.channel import INBOX_BYTES

    a, b = Identity.generate(), Identity.generate()
    near, far = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def flood() -> None:
            async with secure_stream(far, a, initiator=True, expected_peer=b.node_id) as ch:
                for _ in range(40):  # 40 × 4 MiB = 160 MiB offered
                    await ch.send(b"x" * (4 << 20))

        nursery.start_soon(flood)
        async with secure_stream(near, b, initiator=False) as ch:
            await trio.sleep(1)  # on the fake clock: until every task waits, the reader too
            assert INBOX_BYTES - (4 << 20) < ch._buffered <= INBOX_BYTES
            assert await ch.receive() == b"x" * (4 << 20)  # and reading resumes the flow
            nursery.cancel_scope.cancel()


async def test_outbox_writer_ends_quietly_when_the_connection_breaks() -> None:
    from p2psched.wire.channel import Outbox

    a, b = Identity.generate(), Identity.generate()
    near, far = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def other_side() -> None:
            async with secure_stream(far, b, initiator=False):
                pass  # and hang up at once

        nursery.start_soon(other_side)
        async with secure_stream(near, a, initiator=True, expected_peer=b.node_id) as ch:
            outbox = Outbox(ch)
            async with trio.open_nursery() as writers:
                writers.start_soon(outbox.run)
                with pytest.raises(ChannelClosed):
                    while True:  # it broke: the writer stops, and the reader says so
                        outbox.put("x" * 1000)
                        await ch.receive()
                writers.cancel_scope.cancel()


async def test_errors_raised_inside_the_block_come_out_as_they_were() -> None:
    a, b = Identity.generate(), Identity.generate()
    near, far = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def other_side() -> None:
            async with secure_stream(far, b, initiator=False) as ch:
                await ch.receive()

        nursery.start_soon(other_side)
        with pytest.raises(ChannelClosed, match="inside"):  # not an ExceptionGroup
            async with secure_stream(near, a, initiator=True, expected_peer=b.node_id):
                raise ChannelClosed("inside")
        nursery.cancel_scope.cancel()
