"""A real `p2psched dht serve` process, an honest swarm around it, and the attacker's side of a
flood: what `tests/adversarial/test_dht_flood.py` and `bench/flood.py` share. Forged sources are
addresses of 127.0.9.0/24: Linux lets a socket bind any address of 127/8."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import msgpack
import trio

from p2psched.dht import messages as m
from p2psched.dht.node import DhtNode, open_dht_node
from p2psched.dht.protocol import DhtConfig, DhtProtocol
from p2psched.dht.records import Record
from p2psched.dht.routing import Contact
from p2psched.identity import Identity
from p2psched.wire.envelope import HEADER_BYTES, KIND_MAC, MAC_BYTES, SIG_BYTES
from tests.harness.dht import forged_first_contact
from tests.harness.processes import EXE

KEY = os.urandom(32)
HONEST = 12  # in-process nodes that fill the target's table (its answers are then large)


@contextmanager
def dht_serve(data_dir: Path) -> Iterator[tuple[str, int]]:
    argv = [*EXE, "dht", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as p:
        try:
            assert p.stdout is not None
            host, port = p.stdout.readline().split()[5].rsplit(":", 1)
            yield host, int(port)
            assert p.poll() is None  # the node kept running through it all
        finally:
            p.terminate()
            p.wait(timeout=20)


@asynccontextmanager
async def honest_swarm(
    target: tuple[str, int], size: int = HONEST
) -> AsyncIterator[tuple[list[DhtNode], Contact]]:
    """`size` nodes joined through `target`, one of which stored a record under `KEY`; and
    the target's contact (its public key), as they learnt it."""
    async with trio.open_nursery() as nursery:
        nodes: list[DhtNode] = []

        async def run(task_status: trio.TaskStatus[DhtNode]) -> None:
            async with open_dht_node(Identity.generate()) as node:
                task_status.started(node)
                await trio.sleep_forever()

        for _ in range(size):
            nodes.append(await nursery.start(run))
        for node in nodes:
            assert await node.bootstrap([target]) > 0
        assert await nodes[0].put(KEY, os.urandom(1000), ttl=600) > 0
        (contact,) = [c for c in nodes[0].protocol.routing.contacts() if c.addr == target]
        yield nodes, contact
        nursery.cancel_scope.cancel()


def attack_requests(target: Contact, now: float) -> list[bytes]:
    """Every kind of request, from fresh identities that never answer anything: first contact
    by address (signed), then made for the target (MAC). Half say they are DHT clients, whom
    the target never considers for its table: only the size of its answers is at stake."""
    out = []
    for i in range(20):
        identity = Identity.generate()
        core = DhtProtocol(identity, DhtConfig(client=i % 2 == 0), now=now)
        expires_ms = int((now + 600) * 1000)
        record = Record.create(identity, KEY, os.urandom(900), seq=1, expires_ms=expires_ms)
        core.request(target.addr, m.Ping(), now)
        for request in (m.Ping(), m.FindNode(os.urandom(32)), m.FindValue(KEY), m.Store(record)):
            core.request(target, request, now)
        out += [data for data, _ in core.take_outgoing()]
    return out


def body_of(datagram: bytes) -> m.Message:
    auth = MAC_BYTES if datagram[2] == KIND_MAC else SIG_BYTES
    return m.parse(m.split_cookie(msgpack.unpackb(datagram[HEADER_BYTES + auth :]))[0])[1]


def flood(target: tuple[str, int], count: int, per_second: int) -> None:
    """`count` forged first contacts at `target` from 127.0.9.1-50, `per_second` (near what
    fills a core with key agreements when nothing limits them, ~7,000 a second; a faster flood
    only overflows the socket's buffer, which a node cannot help)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(50)]
    for i, s in enumerate(socks):
        s.bind((f"127.0.9.{i + 1}", 0))
    batch = per_second // 100
    for i in range(count):
        socks[i % 50].sendto(forged_first_contact(time.time()), target)
        if i % batch == batch - 1:
            time.sleep(0.01)
    for s in socks:
        s.close()
