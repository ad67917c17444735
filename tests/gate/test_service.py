"""The gate's relay service over real loopback sockets: a gate that reads or alters what it
carries breaks the channel; limits refuse the peer over them and nobody else; hostile or
silent connections do not stop it or shut out another address."""

from __future__ import annotations

import contextlib
import struct
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2psched.gate import service
from p2psched.gate.client import RelayClient, check_reachability, open_control, open_worker_channel
from p2psched.gate.relay import RelayLimits
from p2psched.gate.service import Gate
from p2psched.identity import Identity
from p2psched.wire.channel import SecureChannel
from p2psched.wire.noise import ChannelError
from tests.harness.network import gate_at


class Tamper(Gate):
    """A gate that flips one bit of what it forwards, once the circuit carries data."""

    async def _splice(  # type: ignore[override]
        self, a: trio.abc.Stream, b: trio.abc.Stream, cid: int, scope: trio.CancelScope
    ) -> None:
        async def pump(src: trio.abc.Stream, dst: trio.abc.Stream, flip_after: int) -> None:
            seen = 0
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await src.receive_some(1 << 16):
                    if seen >= flip_after:  # past the handshake: alter a frame's last byte
                        data = data[:-1] + bytes([data[-1] ^ 1])
                    seen += len(data)
                    await dst.send_all(data)
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, a, b, 10**9)
            # worker → scheduler: its handshake message is the first read (it waits for the
            # scheduler's last one before it sends anything else); all after it is altered
            nursery.start_soon(pump, b, a, 1)


async def test_a_gate_that_alters_a_frame_breaks_the_channel(tmp_path: Path) -> None:
    scheduler, worker = Identity.generate(), Identity.generate()
    got: list[object] = []

    async def serve_worker(channel: SecureChannel) -> None:
        await channel.send({"t": "beat", "pad": b"x" * 4096})
        await channel.send({"t": "result", "ok": True})
        await trio.sleep(5)

    async with (
        gate_at(Tamper(Identity.generate())) as (gate, (host, port)),
        trio.open_nursery() as nursery,
    ):
        client = RelayClient(worker, [(host, port)], serve_worker)
        address = await nursery.start(client.serve)
        with trio.fail_after(20), pytest.raises(ChannelError, match="authenticat|decrypt|MAC|tag"):
            async with open_worker_channel(address, scheduler, expected_peer=worker.node_id) as ch:
                while True:
                    got.append(await ch.receive())
        assert got == []  # not one message of the altered stream was taken as genuine
        nursery.cancel_scope.cancel()


async def test_a_reader_gate_sees_no_plaintext(tmp_path: Path) -> None:
    """What crosses the gate is ciphertext: the task's input never appears in it."""
    scheduler, worker = Identity.generate(), Identity.generate()
    carried = bytearray()
    secret = b"the-task-input-only-the-worker-may-read"

    class Recorder(Gate):
        async def _splice(  # type: ignore[override]
            self, a: trio.abc.Stream, b: trio.abc.Stream, cid: int, scope: trio.CancelScope
        ) -> None:
            async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while data := await src.receive_some(1 << 16):
                        carried.extend(data)
                        await dst.send_all(data)
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, a, b)
                nursery.start_soon(pump, b, a)

    async def serve_worker(channel: SecureChannel) -> None:
        message = await channel.receive()
        await channel.send({"t": "echo", "input": message["input"]})

    async with (
        gate_at(Recorder(Identity.generate())) as (gate, (host, port)),
        trio.open_nursery() as nursery,
    ):
        address = await nursery.start(RelayClient(worker, [(host, port)], serve_worker).serve)
        with trio.fail_after(20):
            async with open_worker_channel(address, scheduler, expected_peer=worker.node_id) as ch:
                await ch.send({"t": "run", "input": secret})
                assert (await ch.receive())["input"] == secret
        assert len(carried) > len(secret) and secret not in bytes(carried)
        nursery.cancel_scope.cancel()


async def test_a_scheduler_over_its_circuit_limit_is_refused_and_another_is_not(
    tmp_path: Path,
) -> None:
    greedy, polite, worker = Identity.generate(), Identity.generate(), Identity.generate()

    async def serve_worker(channel: SecureChannel) -> None:
        await trio.sleep(60)

    async with (
        gate_at(Gate(Identity.generate(), RelayLimits(circuits_per_peer=2))) as (
            gate,
            (host, port),
        ),
        trio.open_nursery() as nursery,
    ):
        address = await nursery.start(RelayClient(worker, [(host, port)], serve_worker).serve)
        async with AsyncExitStack() as held:
            for _ in range(2):
                await held.enter_async_context(
                    open_worker_channel(address, greedy, expected_peer=worker.node_id)
                )
            with trio.fail_after(20), pytest.raises(ChannelError, match="2 circuits open"):
                async with open_worker_channel(address, greedy, expected_peer=worker.node_id):
                    pass
            with trio.fail_after(20):
                async with open_worker_channel(address, polite, expected_peer=worker.node_id):
                    pass  # the other scheduler is not affected
        assert gate.relay.counters["circuits_refused"] == 1
        nursery.cancel_scope.cancel()


async def test_a_worker_over_its_reservation_limit_is_refused_and_another_is_not(
    tmp_path: Path,
) -> None:
    one, other = Identity.generate(), Identity.generate()
    async with gate_at(Gate(Identity.generate(), RelayLimits(reservations_per_peer=1))) as (
        gate,
        address,
    ):
        async with open_control(address, one) as first:
            await first.send({"t": "reserve"})
            assert (await first.receive())["t"] == "reserved"
            async with open_control(address, one) as second:
                await second.send({"t": "reserve"})
                refused = await second.receive()
                assert refused["t"] == "refused" and "already holds 1" in refused["reason"]
            async with open_control(address, other) as third:
                await third.send({"t": "reserve"})
                assert (await third.receive())["t"] == "reserved"


async def test_a_malformed_control_message_is_refused_and_the_gate_goes_on(tmp_path: Path) -> None:
    me = Identity.generate()
    async with gate_at() as (gate, address):
        async with open_control(address, me) as channel:
            await channel.send({"t": "reserve", "extra": 1})
            refused = await channel.receive()
            assert refused["t"] == "refused" and "reserve" in refused["reason"]
        stream = await trio.open_tcp_stream(*address)  # garbage instead of a request
        await stream.receive_some(1024)
        await stream.send_all(b"\xff\xff" + b"x" * 10)
        assert b"refused" in await stream.receive_some(1024)
        await stream.aclose()
        await assert_reserves(address, me)  # still serving


async def test_a_reservation_not_refreshed_expires_and_a_refreshed_one_stays(
    autojump_clock: trio.abc.Clock,
) -> None:
    silent, kept = Identity.generate(), Identity.generate()

    async def serve_worker(channel: SecureChannel) -> None:
        await trio.sleep_forever()

    async with (
        gate_at(Gate(Identity.generate(), RelayLimits(reservation_ttl=60.0))) as (gate, address),
        trio.open_nursery() as nursery,
    ):
        await nursery.start(RelayClient(kept, [address], serve_worker).serve)
        async with open_control(address, silent) as channel:
            await channel.send({"t": "reserve"})
            assert (await channel.receive())["t"] == "reserved"
            await trio.sleep(300)  # five TTLs: one never refreshed, the other every 20 s
            with pytest.raises(ChannelError):
                await channel.receive()  # the gate hung up on the silent one
        assert [r["peer"] for r in gate.status()["reservations"]] == [kept.node_id.hex()]
        assert gate.relay.counters["reservations_expired"] == 1
        assert gate.relay.counters["reservations_refreshed"] >= 14
        nursery.cancel_scope.cancel()


async def test_a_circuit_past_its_time_limit_is_closed_and_the_scheduler_can_redial(
    autojump_clock: trio.abc.Clock,
) -> None:
    scheduler, worker = Identity.generate(), Identity.generate()

    async def serve_worker(channel: SecureChannel) -> None:
        async for message in channel:
            await channel.send(message)

    async with (
        gate_at(Gate(Identity.generate(), RelayLimits(circuit_seconds=600.0))) as (gate, address),
        trio.open_nursery() as nursery,
    ):
        relayed = await nursery.start(RelayClient(worker, [address], serve_worker).serve)
        async with open_worker_channel(relayed, scheduler, expected_peer=worker.node_id) as ch:
            await ch.send({"t": "ping"})
            assert await ch.receive() == {"t": "ping"}
            await trio.sleep(601)
            with pytest.raises(ChannelError):
                await ch.send({"t": "ping"})
                await ch.receive()
        async with open_worker_channel(relayed, scheduler, expected_peer=worker.node_id) as ch:
            await ch.send({"t": "again"})
            assert await ch.receive() == {"t": "again"}
        assert gate.relay.counters["circuits_closed"] == 1
        nursery.cancel_scope.cancel()


async def test_the_running_gate_holds_its_circuits_to_its_bandwidth(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The relay's bandwidth is what its shell lets through: 1 MB echoed through a gate
    allowed 100 kB/s takes (virtual) seconds, not the instant it takes on loopback."""
    scheduler, worker = Identity.generate(), Identity.generate()

    async def serve_worker(channel: SecureChannel) -> None:
        async for message in channel:
            await channel.send(message)

    payload = b"x" * (1 << 20)
    async with (
        gate_at(Gate(Identity.generate(), RelayLimits(bandwidth=100e3))) as (gate, address),
        trio.open_nursery() as nursery,
    ):
        relayed = await nursery.start(RelayClient(worker, [address], serve_worker).serve)
        async with open_worker_channel(relayed, scheduler, expected_peer=worker.node_id) as ch:
            start = trio.current_time()
            await ch.send({"t": "bulk", "data": payload})
            assert (await ch.receive())["data"] == payload
            took = trio.current_time() - start
        # 2 MB through the relay (there and back) at 100 kB/s: about 20 s, less its burst.
        assert took >= 10.0, took
        nursery.cancel_scope.cancel()


# -- hostile peers: the gate goes on, and one address cannot shut out another --------------


async def test_connections_reset_at_once_do_not_stop_the_gate(tmp_path: Path) -> None:
    me = Identity.generate()
    async with gate_at() as (gate, address):
        for _ in range(200):  # connect, then reset (RST) before the gate looks at the peer
            sock = trio.socket.socket()
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
            await sock.connect(address)
            sock.close()
        await trio.sleep(0.2)
        await assert_reserves(address, me)


async def test_silent_connections_from_one_address_do_not_shut_out_another(
    tmp_path: Path,
) -> None:
    me = Identity.generate()
    async with gate_at() as (gate, address):
        silent = [
            await trio.open_tcp_stream(*address, local_address="127.0.0.2")
            for _ in range(service.MAX_OPENING_PER_IP + 4)
        ]
        await trio.sleep(0.2)
        assert gate._opening["127.0.0.2"] == service.MAX_OPENING_PER_IP  # the rest were shed
        assert gate.relay.counters["connections_shed"] == 4
        await assert_reserves(address, me)  # from 127.0.0.1: served
        for stream in silent:
            await stream.aclose()


async def test_idle_sockets_cannot_lock_a_newcomer_out_of_its_own_address() -> None:
    """With its address's queue of connections that have not yet spoken full of idle ones,
    a newcomer from the same address is served: the oldest idle one goes, not the newcomer."""
    me = Identity.generate()
    async with gate_at() as (gate, address):
        idle = [await trio.open_tcp_stream(*address) for _ in range(service.MAX_OPENING_PER_IP)]
        await trio.sleep(0.2)
        assert gate._opening["127.0.0.1"] == service.MAX_OPENING_PER_IP
        await assert_reserves(address, me)  # from 127.0.0.1 too: served
        assert gate.relay.counters["connections_shed"] == 1
        for stream in idle:
            await stream.aclose()


async def test_connections_that_say_nothing_are_closed_after_two_seconds(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with gate_at() as (gate, address):
        stream = await trio.open_tcp_stream(*address)
        await trio.sleep(1.9)
        assert gate._opening["127.0.0.1"] == 1
        await trio.sleep(0.2)
        assert gate._opening["127.0.0.1"] == 0  # it was closed, and is not counted
        await stream.aclose()


def test_an_ipv6_home_prefix_counts_as_one_address() -> None:
    from p2psched.wire.address import subnet

    assert subnet("2001:db8:1:ff00::1") == subnet("2001:db8:1:ffaa::2")  # one /56
    assert subnet("2001:db8:1:ff00::1") != subnet("2001:db8:1:100::1")
    assert subnet("192.0.2.1") != subnet("192.0.2.2")


async def test_a_control_channel_without_a_reservation_is_closed_when_idle(
    autojump_clock: trio.abc.Clock,
) -> None:
    me = Identity.generate()
    async with gate_at() as (gate, address):
        async with open_control(address, me) as idle, open_control(address, me) as holder:
            await holder.send({"t": "reserve"})
            assert (await holder.receive())["t"] == "reserved"
            refused = await idle.receive()  # after 30 s of nothing
            assert refused["t"] == "refused" and "idle" in refused["reason"]
            with pytest.raises(ChannelError):
                await idle.receive()
            await holder.send({"t": "reserve"})  # the one with a reservation stays
            assert (await holder.receive())["t"] == "reserved"


async def assert_reserves(address: tuple[str, int], me: Identity) -> None:
    """The gate at `address` gives `me` a reservation: it serves."""
    async with open_control(address, me) as channel:
        await channel.send({"t": "reserve"})
        assert (await channel.receive())["t"] == "reserved"


async def test_dial_backs_are_shared_by_address_and_a_busy_gate_means_the_relay(
    autojump_clock: trio.abc.Clock,
) -> None:
    me = Identity.generate()
    async with gate_at() as (gate, address):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]  # listens, so the gate reaches it, but no Noise
        gate._dialbacks["127.0.0.2"] = service.MAX_DIALBACKS_PER_IP  # another address's share
        check = await check_reachability([address], me, port)
        assert check is not None and check.seen == f"127.0.0.1:{port}"  # it was checked
        gate._dialbacks["127.0.0.1"] = service.MAX_DIALBACKS_PER_IP  # now ours is taken
        check = await check_reachability([address], me, port)
        assert check is not None and not check.reachable and check.seen == ""
        assert "no gate would check it" in check.reason and "busy" in check.reason
        await listener.aclose()
