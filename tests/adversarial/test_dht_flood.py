"""Floods and amplification against a real `p2psched dht serve` process over UDP on loopback.
The attacker's (forged) sources are addresses of 127.0.9.0/24: Linux lets a socket bind any
address of 127/8, so the node sees them as one /24 other than its own (127.0.0.1)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import trio

from p2psched.dht import messages as m
from p2psched.dht.node import open_dht_node
from p2psched.identity import Identity
from tests.harness.flood import attack_requests, body_of, dht_serve, flood, honest_swarm


async def test_an_unproven_address_gets_no_more_bytes_than_it_sent_and_no_ping(
    tmp_path: Path,
) -> None:
    """Requests of every kind from a spoofed source (a victim at 127.0.9.7 that never answers):
    the bytes the node sends there are at most the bytes sent from there, and none of them is
    a request (no ping)."""
    with dht_serve(tmp_path / "target") as target:
        async with honest_swarm(target) as (_, contact):
            victim = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await victim.bind(("127.0.9.7", 0))
            sent = received = 0
            answers: list[m.Message] = []
            for data in attack_requests(contact, time.time()):
                sent += await victim.sendto(data, target)
            with trio.move_on_after(2):  # (what the node sends back arrives by then)
                while True:
                    data = await victim.recv(65536)
                    received += len(data)
                    answers.append(body_of(data))
            victim.close()
    assert answers and received <= sent, (received, sent)
    assert not [a for a in answers if a.TYPE in m.REQUEST_TYPES]
    assert any(isinstance(a, m.Retry) for a in answers)


async def test_honest_requests_are_all_answered_through_a_flood_from_one_slash_24(
    tmp_path: Path,
) -> None:
    """20,000 forged first contacts from 127.0.9.0/24, 5,000 a second, while known peers ask
    the node and a newcomer from another /24 joins: every honest request is answered."""
    with dht_serve(tmp_path / "target") as target:
        async with honest_swarm(target) as (nodes, contact):
            unanswered = asked = 0
            async with trio.open_nursery() as nursery:
                done = trio.Event()

                async def run_flood() -> None:
                    await trio.to_thread.run_sync(flood, target, 20_000, 5_000)
                    done.set()

                nursery.start_soon(run_flood)
                for _ in range(200):  # bounded; ends with the flood
                    for node in nodes[:3]:
                        asked += 1
                        got = await node.call(contact, m.FindNode(os.urandom(32)))
                        unanswered += got is None
                    if done.is_set():
                        break
            async with open_dht_node(Identity.generate()) as newcomer:
                assert await newcomer.bootstrap([target]) > 0
    assert asked > 3 and unanswered == 0
