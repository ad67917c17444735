"""The gate's relay in one process, over real loopback sockets: workers that accept no inbound
connection take and finish tasks through a gate; a gate that reads or alters what it carries
breaks the channel; limits refuse the peer over them and nobody else; a worker whose gate dies
moves to another and its tasks still finish."""

from __future__ import annotations

import contextlib
import struct
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched.gate import service
from p2psched.gate.client import RelayClient, check_reachability, open_control, open_worker_channel
from p2psched.gate.config import GateConfigError, check_gate_config
from p2psched.gate.relay import Bandwidth, Refusal, Relay, RelayLimits
from p2psched.gate.service import Gate
from p2psched.identity import Identity
from p2psched.node.node import JoinError, Node, open_node
from p2psched.scheduler.job import parse_job
from p2psched.wire.address import parse_relay_address, relay_address
from p2psched.wire.channel import SecureChannel
from p2psched.wire.noise import ChannelError
from tests.harness.network import ECHO, MACHINE, echo_job, gate_at, private_workers, relayed_network

# -- the core's limits, sans I/O ------------------------------------------------------------


def test_a_peer_over_its_reservation_limit_is_refused_and_others_are_not() -> None:
    relay = Relay(RelayLimits(reservations_per_peer=2, reservations_per_ip=3))
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    assert not isinstance(relay.reserve(1, a, "10.0.0.1", 0.0), Refusal)
    assert not isinstance(relay.reserve(2, a, "10.0.0.1", 0.0), Refusal)
    refused = relay.reserve(3, a, "10.0.0.1", 0.0)
    assert isinstance(refused, Refusal) and "already holds 2 reservations" in refused.reason
    assert not isinstance(relay.reserve(4, b, "10.0.0.1", 0.0), Refusal)  # b is not affected
    by_ip = relay.reserve(5, c, "10.0.0.1", 0.0)  # the fourth from one address
    assert isinstance(by_ip, Refusal) and "10.0.0.1" in by_ip.reason
    assert not isinstance(relay.reserve(6, c, "10.0.0.2", 0.0), Refusal)
    assert relay.counters["reservations_refused"] == 2
    assert relay.counters["reservations_made"] == 4


def test_a_refresh_is_not_a_new_reservation_and_an_unrefreshed_one_expires() -> None:
    relay = Relay(RelayLimits(reservations_per_peer=1, reservation_ttl=60.0))
    w = b"w" * 32
    relay.reserve(1, w, "10.0.0.1", 0.0)
    assert not isinstance(relay.reserve(1, w, "10.0.0.1", 50.0), Refusal)  # a refresh
    assert relay.next_deadline() == 110.0
    assert relay.expire(100.0) == []
    ended = relay.expire(110.0)
    assert [(e.kind, e.key) for e in ended] == [("reservation", 1)]
    assert relay.holder(w) is None


def test_a_peer_over_its_circuit_limit_is_refused_and_others_are_not() -> None:
    relay = Relay(RelayLimits(circuits_per_peer=2))
    w, s1, s2 = b"w" * 32, b"1" * 32, b"2" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    first = relay.request(s1, "10.0.0.1", w, 0.0)
    second = relay.request(s1, "10.0.0.1", w, 0.0)
    third = relay.request(s1, "10.0.0.1", w, 0.0)
    assert not isinstance(first, Refusal) and not isinstance(second, Refusal)
    assert isinstance(third, Refusal) and "2 circuits open" in third.reason
    assert not isinstance(relay.request(s2, "10.0.0.1", w, 0.0), Refusal)
    nobody = relay.request(s2, "10.0.0.1", b"x" * 32, 0.0)
    assert isinstance(nobody, Refusal) and "no reservation" in nobody.reason
    relay.close(first.cid)  # one closed: s1 may open another
    assert not isinstance(relay.request(s1, "10.0.0.1", w, 0.0), Refusal)


def test_circuit_limits_bytes_time_and_answer() -> None:
    relay = Relay(RelayLimits(circuit_bytes=1000, circuit_seconds=30.0, answer_seconds=5.0))
    w, s = b"w" * 32, b"s" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    slow = relay.request(s, "10.0.0.1", w, 0.0)
    up = relay.request(s, "10.0.0.1", w, 0.0)
    assert not isinstance(slow, Refusal) and not isinstance(up, Refusal)
    assert not isinstance(relay.accept(up.token, 1.0), Refusal)
    assert isinstance(relay.accept(up.token, 1.0), Refusal)  # a token serves once
    assert relay.carry(up.cid, 600, 1.0) == 0.0
    over = relay.carry(up.cid, 600, 1.0)
    assert isinstance(over, Refusal) and "1000 bytes" in over.reason
    ended = relay.expire(5.0)  # the worker never took `slow` up
    assert [(e.kind, e.key) for e in ended] == [("circuit", slow.cid)]
    assert "did not take it up" in ended[0].reason
    ended = relay.expire(31.0)
    assert [(e.kind, e.key) for e in ended] == [("circuit", up.cid)]


def test_bandwidth_is_shared_and_paid_back_over_time() -> None:
    bucket = Bandwidth(rate=1000.0, burst=100.0, level=100.0)
    assert bucket.take(100, 0.0) == 0.0
    assert bucket.take(500, 0.0) == pytest.approx(0.5)  # 500 bytes over: half a second
    assert bucket.take(0, 0.5) == pytest.approx(0.0)  # paid back by then
    assert bucket.take(100, 10.0) == 0.0  # idle time refills only up to the burst
    assert bucket.take(1, 10.0) == pytest.approx(0.001)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="circuits_per_peer"):
        RelayLimits(circuits_per_peer=0)
    with pytest.raises(ValueError, match="unknown relay limit 'circuits_per_pear'"):
        check_gate_config({"relay": {"circuits_per_pear": 3}})
    assert check_gate_config({"relay": {"bandwidth": 1e6}}).relay.bandwidth == 1e6


@pytest.mark.parametrize(
    ("doc", "said"),
    [
        # TOML's true is a bool, and a bool is an int in Python: it must not count as 1.
        ({"relay": {"reservations": True}}, "relay limit reservations: True is not a positive"),
        ({"relay": {"circuit_seconds": False}}, "relay limit circuit_seconds: False is not a"),
        # A misspelled table would leave every limit at its default without a word.
        ({"rleay": {"reservations": 4}}, "[rleay]: unknown table; known: [relay]"),
        ({"relay": 5}, "[relay] must be a table"),
    ],
)
def test_a_gate_config_refuses_what_it_would_misread(doc: dict[str, Any], said: str) -> None:
    with pytest.raises(GateConfigError) as e:
        check_gate_config(doc)
    assert said in str(e.value)


async def test_workers_that_accept_no_connection_complete_tasks_through_a_gate(
    tmp_path: Path,
) -> None:
    async with relayed_network(tmp_path, workers=2) as (scheduler, workers, (gate,)):
        for w in workers:
            assert w.worker is not None and w.worker.reachability == "private"
            assert w.worker.service._nursery is not None
            assert w.worker.address == relay_address(
                f"{gate.dht.address[0]}:{gate.dht.address[1]}", w.node_id
            )
            assert w.worker.advert.profile.addresses == (w.worker.address,)
            assert w.dht.protocol.config.client  # out of others' routing tables
        job = scheduler.jobs.submit(parse_job(echo_job(40)))
        with trio.fail_after(60):
            await job.done.wait()
        assert job.run.counts() == {"completed": 40}
        assert all(t.output == {"n": t.spec.index} for t in job.run.tasks.values())
        assert {t.worker for t in job.run.tasks.values()} == {w.node_id for w in workers}
        assert gate.gate is not None
        counters = gate.gate.status()["counters"]
        assert counters["circuits_opened"] == 2  # one per worker, carrying every task
        assert counters["bytes_relayed"] > 0
        assert len(gate.gate.status()["reservations"]) == 2


async def test_a_worker_that_can_be_dialed_back_stays_direct(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        gate = await stack.enter_async_context(
            open_node(Identity.generate(), tmp_path / "g", gate=True)
        )
        worker = await stack.enter_async_context(
            open_node(
                Identity.generate(),
                tmp_path / "w",
                seeds=[gate.dht.address],
                worker=ECHO,
                detected=MACHINE,
            )
        )
        assert worker.worker is not None and worker.worker.reachability == "public"
        assert "dialed it back" in worker.worker.why
        assert parse_relay_address(worker.worker.address) is None
        assert not worker.dht.protocol.config.client
        assert gate.gate is not None and gate.gate.status()["reservations"] == []


async def test_a_port_nobody_answers_on_is_reported_unreachable(tmp_path: Path) -> None:
    me = Identity.generate()
    async with gate_at() as (gate, address):
        closed = trio.socket.socket()
        await closed.bind(("127.0.0.1", 0))  # bound, not listening: the dial is refused
        port = closed.getsockname()[1]
        check = await check_reachability([("127.0.0.1", 1), address], me, port)
        closed.close()
        assert check is not None and not check.reachable
        assert check.seen == f"127.0.0.1:{port}" and "cannot connect" in check.reason


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


async def test_when_its_gate_dies_a_worker_moves_to_another_and_running_tasks_finish(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:

        async def run_gate(name: str, seeds: list[tuple[str, int]], task_status: Any) -> None:
            async with open_node(Identity.generate(), tmp_path / name, seeds=seeds, gate=True) as g:
                task_status.started(g)
                await trio.sleep_forever()

        first_scope = trio.CancelScope()

        async def first_gate(task_status: Any) -> None:
            with first_scope:
                await run_gate("g0", [], task_status)

        g0: Node = await nursery.start(first_gate)
        g1: Node = await nursery.start(run_gate, "g1", [g0.dht.address])
        seeds = [g0.dht.address, g1.dht.address]
        async with AsyncExitStack() as stack:
            workers = await private_workers(stack, tmp_path, seeds, 2)
            scheduler = await stack.enter_async_context(
                open_node(Identity.generate(), tmp_path / "s", seeds=seeds)
            )
            for w in workers:
                first = relay_address(f"127.0.0.1:{g0.dht.address[1]}", w.node_id)
                assert w.worker is not None and w.worker.address == first
            naps = {"name": "naps", "driver": "sleep", "tasks": [{"input": {"seconds": 3}}] * 4}
            job = scheduler.jobs.submit(parse_job(naps))
            with trio.fail_after(30):
                while job.run.counts().get("running", 0) < 4:  # one per slot, all started
                    await trio.sleep(0.05)
            first_scope.cancel()  # the first gate dies, with every circuit through it
            with trio.fail_after(60):
                await job.done.wait()
            tasks = list(job.run.tasks.values())
            assert job.run.counts() == {"completed": 4}, [t.error for t in tasks]
            assert all(t.attempts == 0 for t in tasks)  # none was run again elsewhere
            assert sum(w.worker.service.completed for w in workers if w.worker) == 4
            for w in workers:  # each moved to the second gate, and said so in its ad
                assert w.worker is not None and w.worker.relay is not None
                assert w.worker.relay.moves == 1
                moved = relay_address(f"127.0.0.1:{g1.dht.address[1]}", w.node_id)
                assert w.worker.advert.profile.addresses == (moved,)
            assert g1.gate is not None
            assert g1.gate.status()["counters"]["circuits_opened"] == 2
        nursery.cancel_scope.cancel()


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


def test_one_address_cannot_take_every_circuit_under_many_ids() -> None:
    relay = Relay(RelayLimits(circuits=100, circuits_per_ip=3))
    w = b"w" * 32
    relay.reserve(1, w, "10.0.0.9", 0.0)
    for i in range(3):  # a fresh id each time: the per-peer limit alone would not stop it
        assert not isinstance(relay.request(bytes([i]) * 32, "10.0.0.66", w, 0.0), Refusal)
    sybil = relay.request(b"x" * 32, "10.0.0.66", w, 0.0)
    assert isinstance(sybil, Refusal) and "from your address 10.0.0.66" in sybil.reason
    assert not isinstance(relay.request(b"h" * 32, "10.0.0.1", w, 0.0), Refusal)


async def assert_reserves(address: tuple[str, int], me: Identity) -> None:
    """The gate at `address` gives `me` a reservation: it serves."""
    async with open_control(address, me) as channel:
        await channel.send({"t": "reserve"})
        assert (await channel.receive())["t"] == "reserved"


def leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for e in group.exceptions for leaf in leaves(e)]
    return [group]


class Chatty(Gate):
    """A gate that answers a reservation with a message no worker knows (a newer version, a
    bug, or malice)."""

    def _reserve(self, control: Any) -> None:
        super()._reserve(control)
        control.outbox.put({"t": "notice", "text": "hello from the future"})


async def test_a_gate_that_says_something_unknown_is_left_for_the_next(tmp_path: Path) -> None:
    worker = Identity.generate()

    async def serve_worker(channel: SecureChannel) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        odd = await nursery.start(Chatty(Identity.generate()).serve)
        good_gate = Gate(Identity.generate())
        good = await nursery.start(good_gate.serve)
        client = RelayClient(worker, [odd, good], serve_worker)
        first = await nursery.start(client.serve)
        assert first.startswith(f"127.0.0.1:{odd[1]}/relay/")
        with trio.fail_after(20):
            while client.moves == 0:
                await trio.sleep(0.05)
        assert client.address == relay_address(f"127.0.0.1:{good[1]}", worker.node_id)
        assert "does not understand" in client.reasons[f"127.0.0.1:{odd[1]}"]
        assert len(good_gate.status()["reservations"]) == 1
        nursery.cancel_scope.cancel()


async def test_a_worker_no_gate_will_relay_for_is_told_why(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        full = await stack.enter_async_context(
            open_node(
                Identity.generate(),
                tmp_path / "g",
                gate=True,
                relay_limits=RelayLimits(reservations=1),
            )
        )
        await private_workers(stack, tmp_path, [full.dht.address], 1)  # takes the one place
        said: list[str] = []
        try:
            async with open_node(
                Identity.generate(),
                tmp_path / "late",
                seeds=[full.dht.address],
                worker=ECHO,
                detected=MACHINE,
                reachability="private",
            ):
                pass
        except* JoinError as group:  # (from inside the node's nurseries)
            said = [str(e) for e in leaves(group)]
        assert len(said) == 1 and "no gate would relay" in said[0], said
        assert "limit of 1 reservations" in said[0]


async def test_a_worker_whose_tcp_port_is_taken_listens_on_another(tmp_path: Path) -> None:
    blocker = trio.socket.socket()
    await blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]  # taken on TCP; free on UDP for the DHT
    async with open_node(
        Identity.generate(),
        tmp_path / "w",
        port=port,
        worker=ECHO,
        detected=MACHINE,
        reachability="public",
    ) as node:
        assert node.dht.address[1] == port
        assert node.worker is not None and not node.worker.address.endswith(f":{port}")
    blocker.close()


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
