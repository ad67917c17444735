"""The id puzzle where ids enter the store without being a datagram's sender: a record's
publisher. One identity that did the work could otherwise store ads signed by any number of free
key pairs, each ground into a victim's shard in a few tries, and past the per-publisher cap;
and a hostile holder could hand such ads to a scheduler. Sans-I/O, `now` passed in by hand."""

from __future__ import annotations

import pytest

from p2psched.dht import messages as m
from p2psched.dht.protocol import DhtConfig, DhtProtocol
from p2psched.dht.records import Record
from p2psched.identity import Identity, id_has_work, network_id_bits
from p2psched.resources.need import MAX_AD_LIFETIME, capability_keys
from p2psched.scheduler.ads import WorkerAd, check_ad_record
from tests.harness.dht import NOW, Link
from tests.harness.profiles import profile

NODE, ATTACKER = ("198.51.100.1", 1), ("203.0.113.5", 2)


def free_ad_in_shard_of(victim: bytes) -> Record:
    """An ad signed by a key pair that did no work, ground (for free) into `victim`'s shard."""
    key = capability_keys(profile(), victim)["any"]
    for _ in range(100_000):
        free = Identity.generate(0)
        if id_has_work(free.node_id, network_id_bits()):
            continue
        if capability_keys(profile(), free.node_id)["any"] == key:
            value = profile(addresses=("203.0.113.5:9",)).encode()
            expires = int((NOW + MAX_AD_LIFETIME - 5) * 1000)
            return Record.create(free, key, value, seq=1, expires_ms=expires)
    raise AssertionError("no free identity landed in the shard")


def test_a_holder_refuses_a_record_whose_publisher_shows_no_work() -> None:
    link = Link()
    node = link.cores[NODE] = DhtProtocol(
        Identity.generate(), DhtConfig(), now=NOW, validate=check_ad_record
    )
    link.events[NODE] = []
    attacker = link.add(ATTACKER, DhtConfig(client=True))  # its own id did the work
    record = free_ad_in_shard_of(Identity.generate().node_id)
    attacker.request(link.contact(NODE), m.Store(record), NOW)
    link.run()
    (answer,) = link.answers(ATTACKER)
    assert isinstance(answer.message, m.Stored) and not answer.message.ok
    assert "puzzle" in answer.message.reason
    assert len(node.store) == 0


def test_a_scheduler_drops_an_ad_whose_publisher_shows_no_work() -> None:
    record = free_ad_in_shard_of(Identity.generate().node_id)
    with pytest.raises(ValueError, match="puzzle"):
        WorkerAd.from_record(record)
    assert check_ad_record(record, "203.0.113.5", NOW) is not None


def test_a_hostile_holder_cannot_hand_out_records_of_free_publishers() -> None:
    link = Link()
    holder, asker = link.add(NODE), link.add(ATTACKER)
    record = free_ad_in_shard_of(Identity.generate().node_id)
    holder.store.put(record, NOW)  # (a hostile holder keeps what it likes)
    asker.request(link.contact(NODE), m.FindValue(record.key), NOW)
    link.run()
    (answer,) = link.answers(ATTACKER)
    assert isinstance(answer.message, m.Values) and answer.message.records == []
