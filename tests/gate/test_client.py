"""The side of the relay other nodes run, against real gates on loopback: a port nobody
answers on is reported unreachable, and a gate that says something unknown is left for the
next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from p2psched.gate.client import RelayClient, check_reachability
from p2psched.gate.service import Gate
from p2psched.identity import Identity
from p2psched.wire.address import relay_address
from p2psched.wire.channel import SecureChannel
from tests.harness.network import gate_at


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


def test_reconnection_delays_are_spread_so_workers_do_not_return_in_one_burst() -> None:
    from p2psched.gate.client import jittered

    delays = [jittered(4.0) for _ in range(1000)]
    assert 2.0 <= min(delays) and max(delays) <= 6.0
    assert len({round(d, 3) for d in delays}) > 500  # not one instant, nor a few
    assert max(delays) - min(delays) > 3.0
