"""The node as one process composes it: a worker whose TCP port is taken listens on
another."""

from __future__ import annotations

from pathlib import Path

import trio

from p2psched.identity import Identity
from p2psched.node.node import open_node
from tests.harness.network import ECHO, MACHINE


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
