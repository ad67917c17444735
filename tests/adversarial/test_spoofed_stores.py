"""Stores from sources an attacker does not hold, against the DHT core (sans-I/O, `now` passed in
by hand): a datagram's MAC is made from the two identities alone, so anyone may send one from a
forged source address. Per-prefix fairness and the LAN rule for ad addresses count a Store by its
source, so a Store from an address that has not proven itself must change nothing."""

from __future__ import annotations

import os

import pytest

from p2psched.dht import messages as m
from p2psched.dht.protocol import DhtConfig, DhtProtocol
from p2psched.dht.records import Record
from p2psched.identity import Identity
from tests.harness.dht import NOW, Link, introduce

NODE, ATTACKER, HONEST = ("198.51.100.1", 1), ("203.0.113.5", 2), ("192.0.2.7", 3)


def forged_stores(link: Link, count: int) -> int:
    """`count` Stores by the attacker's core, each delivered from a forged source in its own
    /24 (where nobody reads the answers); how many of them the node stored."""
    attacker, node = link.cores[ATTACKER], link.cores[NODE]
    stored = 0
    for i in range(count):
        record = Record.create(
            Identity.generate(),
            os.urandom(32),
            os.urandom(512),
            seq=1,
            expires_ms=int((NOW + 600) * 1000),
        )
        before = len(node.store)
        attacker.request(link.contact(NODE), m.Store(record), NOW)
        ((data, _),) = attacker.take_outgoing()
        node.datagram_received(data, (f"10.{i // 256}.{i % 256}.9", 4000), NOW)
        node.take_outgoing()  # to the forged source: lost
        stored += len(node.store) - before
    return stored


def test_a_store_from_a_forged_source_is_not_kept_nor_counted_against_that_prefix() -> None:
    link = Link()
    node: DhtProtocol = link.add(NODE)
    link.add(ATTACKER, DhtConfig(client=True))  # a client: never considered for the table
    assert forged_stores(link, 300) == 0
    assert node.store.keys() == []


@pytest.mark.parametrize("client", [True, False])
def test_an_honest_store_from_an_unproven_address_is_kept_after_one_retry(client: bool) -> None:
    link = Link()
    node = link.add(NODE)
    honest = link.add(HONEST, DhtConfig(client=client))
    record = Record.create(
        honest.identity, os.urandom(32), b"v", seq=1, expires_ms=int((NOW + 600) * 1000)
    )
    honest.request(link.contact(NODE), m.Store(record), NOW)
    link.run()
    (answer,) = link.answers(HONEST)
    assert answer.message == m.Stored(True, "")
    assert node.store.get(record.key, NOW) == [record]
    assert node.rpcs_received[("store", "retry")] == 1
    introduce(link, HONEST, NODE)  # (and a proven one is kept at once)
    again = Record.create(
        honest.identity, os.urandom(32), b"w", seq=1, expires_ms=int((NOW + 600) * 1000)
    )
    honest.request(link.contact(NODE), m.Store(again), NOW)
    link.run()
    assert node.store.get(again.key, NOW) == [again]
    assert node.rpcs_received[("store", "retry")] == 1
