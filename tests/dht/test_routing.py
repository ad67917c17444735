"""The routing table, pure: buckets, ping-before-evict, replacements, eclipse limits."""

from __future__ import annotations

import os
import random

import pytest

from p2psched.dht.routing import (
    Contact,
    RoutingTable,
    TrustedNetworks,
    as_int,
    ip_prefix,
    is_lan,
)

OWN = bytes(32)


def contact_in_bucket(index: int, host: str = "127.0.0.1", port: int = 1) -> Contact:
    """A contact whose id falls in bucket `index` of a table owned by the all-zero id; the
    public key is random, so only the id is forced (tables never check the two agree)."""
    d = (1 << index) | random.getrandbits(index) if index else 1
    return Contact(d.to_bytes(32, "big"), host, port, os.urandom(32))


def test_observe_adds_until_the_bucket_is_full_then_asks_for_a_ping() -> None:
    t = RoutingTable(OWN, k=4)
    cs = [contact_in_bucket(200) for _ in range(6)]
    for c in cs[:4]:
        assert t.observe(c, 1.0) is None
    assert len(t) == 4
    # Everyone was heard from within the last minute: no ping, the newcomer waits.
    assert t.observe(cs[4], 30.0) is None
    to_ping = t.observe(cs[4], 61.0)
    assert to_ping == cs[0]  # the least recently seen, silent for a minute
    assert cs[4].node_id not in t
    # while that ping is out, more newcomers only queue as replacements
    assert t.observe(cs[5], 62.0) is None


def test_a_live_contact_is_never_evicted_for_a_newcomer() -> None:
    t = RoutingTable(OWN, k=2)
    a, b, c = (contact_in_bucket(100) for _ in range(3))
    t.observe(a, 1.0)
    t.observe(b, 1.0)
    assert t.observe(c, 100.0) == a
    t.ping_answered(a.node_id, True, 101.0)
    assert a.node_id in t and b.node_id in t and c.node_id not in t
    # a now counts as most recently seen, so b is the next to be checked
    d = contact_in_bucket(100)
    assert t.observe(d, 102.0) == b


def test_a_dead_contact_is_replaced_by_the_newest_replacement() -> None:
    t = RoutingTable(OWN, k=2)
    a, b, c, d = (contact_in_bucket(100) for _ in range(4))
    for x in (a, b):
        t.observe(x, 1.0)
    assert t.observe(c, 100.0) == a
    t.observe(d, 100.0)
    t.ping_answered(a.node_id, False, 101.0)
    assert a.node_id not in t
    assert d.node_id in t  # the most recently seen replacement
    assert len(t) == 2


def test_failed_rpcs_remove_a_contact() -> None:
    t = RoutingTable(OWN, k=20, max_fails=2)
    a = contact_in_bucket(50)
    t.observe(a, 1.0)
    t.failed(a.node_id, a.addr, 2.0)
    assert a.node_id in t
    t.failed(a.node_id, a.addr, 3.0)
    assert a.node_id not in t
    # answering again resets the count
    t.observe(a, 4.0)
    t.failed(a.node_id, a.addr, 5.0)
    t.observe(a, 6.0)
    t.failed(a.node_id, a.addr, 7.0)
    assert a.node_id in t
    # Silence at an address someone else named for a's key says nothing about a.
    for _ in range(5):
        t.failed(a.node_id, ("203.0.113.9", 1), 8.0)
    assert a.node_id in t


def test_a_contact_heard_at_another_address_does_not_move() -> None:
    t = RoutingTable(OWN, k=20)
    a = contact_in_bucket(50, host="127.0.0.1", port=1000)
    t.observe(a, 1.0)
    relayed = Contact(a.node_id, "198.51.100.66", 4000, a.public_key)
    t.observe(relayed, 2.0)
    assert t.contacts() == [a]


def test_closest_matches_brute_force() -> None:
    own = os.urandom(32)
    t = RoutingTable(own, k=20)
    cs = [Contact(os.urandom(32), "127.0.0.1", 1, os.urandom(32)) for _ in range(2000)]
    for c in cs:
        t.observe(c, 1.0)
    held = t.contacts()
    assert 20 <= len(held) < 2000  # far buckets filled up
    near_own = [
        (as_int(own) ^ random.getrandbits(b)).to_bytes(32, "big") for b in (0, 3, 100, 240, 250)
    ]
    for target in [os.urandom(32) for _ in range(20)] + near_own + [own]:
        want = sorted(held, key=lambda c: as_int(c.node_id) ^ as_int(target))[:20]
        assert t.closest(target, 20) == want
        assert t.closest(target, 3) == want[:3]
        assert want[0] not in t.closest(target, 20, exclude=want[0].node_id)
    # Removals keep the bucket bookkeeping right.
    for c in held[: len(held) // 2]:
        t.failed(c.node_id, c.addr, 2.0)
        t.failed(c.node_id, c.addr, 2.0)
    held = t.contacts()
    for target in [os.urandom(32) for _ in range(10)] + near_own:
        assert (
            t.closest(target, 20)
            == sorted(held, key=lambda c: as_int(c.node_id) ^ as_int(target))[:20]
        )


def test_ip_prefix_limits_per_bucket_and_per_table() -> None:
    t = RoutingTable(OWN, k=20, bucket_ip_limit=2, table_ip_limit=10)
    # Many ids from one /24, all in one bucket: two get in.
    for i in range(50):
        t.observe(contact_in_bucket(255, host=f"203.0.113.{i}"), 1.0)
    assert len(t) == 2
    # Spread across buckets: the table stops at ten for the prefix.
    for i in range(50):
        t.observe(contact_in_bucket(200 + i % 50, host=f"203.0.113.{i}"), 1.0)
    assert len(t) == 10
    assert t.refused_by_ip >= 90
    # Another prefix is unaffected, and loopback is exempt.
    t.observe(contact_in_bucket(255, host="198.51.100.7"), 1.0)
    for _ in range(30):
        t.observe(contact_in_bucket(240, host="127.0.0.1"), 1.0)
    assert len(t) == 10 + 1 + 20


def test_prefix_counts_are_released_on_removal() -> None:
    t = RoutingTable(OWN, k=20, bucket_ip_limit=2, table_ip_limit=10)
    a, b = contact_in_bucket(255, host="203.0.113.1"), contact_in_bucket(255, host="203.0.113.2")
    t.observe(a, 1.0)
    t.observe(b, 1.0)
    t.failed(a.node_id, a.addr, 2.0)
    t.failed(a.node_id, a.addr, 2.0)
    c = contact_in_bucket(255, host="203.0.113.3")
    t.observe(c, 3.0)
    assert c.node_id in t


def test_ip_prefix() -> None:
    assert ip_prefix("203.0.113.77") == "203.0.113.0/24"
    assert ip_prefix("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert ip_prefix("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert ip_prefix("::ffff:127.0.0.1") is None
    assert ip_prefix("127.0.0.1") is None
    assert ip_prefix("::1") is None
    assert ip_prefix("not-an-ip") is None


def fill(t: RoutingTable, hosts: list[str]) -> int:
    """Offer the table one contact at each host, spread over buckets 200-255 (a few per
    bucket, as a swarm's contacts fall); how many it took."""
    before = len(t)
    for i, host in enumerate(hosts):
        t.observe(contact_in_bucket(200 + i % 56, host=host), 1.0)
    return len(t) - before


LAN_SUBNETS = ["10.9.8", "172.20.1", "192.168.1", "169.254.3"]


@pytest.mark.parametrize("subnet", LAN_SUBNETS)
def test_a_lab_on_one_private_slash_24_is_not_capped(subnet: str) -> None:
    t = RoutingTable(OWN, k=20, bucket_ip_limit=2, table_ip_limit=10)
    assert fill(t, [f"{subnet}.{i}" for i in range(1, 201)]) == 200
    assert t.refused_by_ip == 0


@pytest.mark.parametrize("net", ["fd12:3456:789a:1::", "fe80::"])  # unique-local, link-local
def test_unique_local_and_link_local_ipv6_are_not_capped(net: str) -> None:
    hosts = [f"{net}{i:x}" for i in range(1, 61)]  # all in one /48
    t = RoutingTable(OWN, k=20, bucket_ip_limit=2, table_ip_limit=10)
    assert fill(t, hosts) == 60


@pytest.mark.parametrize(
    "subnet",
    # public space, CGNAT (shared among a carrier's strangers), and ranges Python calls private
    # that are not a LAN (documentation, benchmarking): all keep the caps
    ["203.0.113", "8.8.4", "100.64.0", "198.18.0", "192.0.0"],
)
def test_a_public_slash_24_keeps_its_cap(subnet: str) -> None:
    t = RoutingTable(OWN, k=20, bucket_ip_limit=2, table_ip_limit=10)
    assert fill(t, [f"{subnet}.{i}" for i in range(1, 201)]) == 10
    assert t.refused_by_ip == 190


def test_a_public_slash_48_keeps_its_cap() -> None:
    t = RoutingTable(OWN, k=20, bucket_ip_limit=2, table_ip_limit=10)
    assert fill(t, [f"2001:db8:1:{i:x}::1" for i in range(1, 61)]) == 10


def test_without_the_lan_exemption_a_lab_is_capped_as_before() -> None:
    trusted = TrustedNetworks(lan=False)
    t = RoutingTable(OWN, k=20, bucket_ip_limit=2, table_ip_limit=10, trusted=trusted)
    assert fill(t, [f"10.9.8.{i}" for i in range(1, 201)]) == 10
    assert fill(t, ["127.0.0.1"] * 30) == 30  # loopback stays exempt: a local swarm works


def test_networks_an_operator_trusts_are_not_capped_and_others_are() -> None:
    trusted = TrustedNetworks.parse(["100.64.0.0/10", " 2001:db8:ff::/48 "])
    t = RoutingTable(OWN, k=20, bucket_ip_limit=2, table_ip_limit=10, trusted=trusted)
    assert fill(t, [f"100.101.7.{i}" for i in range(1, 101)]) == 100
    assert fill(t, [f"2001:db8:ff::{i:x}" for i in range(1, 41)]) == 40
    assert fill(t, [f"100.128.0.{i}" for i in range(1, 101)]) == 10  # outside 100.64/10
    assert fill(t, [f"203.0.113.{i}" for i in range(1, 101)]) == 10


def test_a_bad_trusted_network_is_named() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IP network"):
        TrustedNetworks.parse(["10.0.0.0/33"])


def test_is_lan_and_trusts() -> None:
    for host in ("10.1.2.3", "172.31.255.1", "192.168.0.9", "169.254.1.1", "fd00::1"):
        assert is_lan(host), host
    for host in ("fe80::1", "fe80::1%eth0", "::ffff:192.168.0.9", "127.0.0.1", "::1"):
        assert is_lan(host), host
    for host in ("172.32.0.1", "100.64.0.1", "8.8.8.8", "2001:db8::1", "name.example", ""):
        assert not is_lan(host), host
    assert TrustedNetworks().trusts("10.0.0.1")
    assert not TrustedNetworks(lan=False).trusts("10.0.0.1")
    assert TrustedNetworks(lan=False).trusts("127.0.0.1")
    assert not TrustedNetworks().trusts("not-an-ip")
    assert TrustedNetworks.parse(["100.64.0.0/10"]).trusts("::ffff:100.64.0.1")


def test_refresh_lists_idle_buckets_from_the_nearest_occupied_one() -> None:
    t = RoutingTable(OWN, k=20, now=0.0)
    t.observe(contact_in_bucket(250), 0.0)
    assert t.buckets_to_refresh(100.0, 3600.0) == []
    due = t.buckets_to_refresh(3600.0, 3600.0)
    assert due == list(range(250, 256))
    rng = random.Random(1)
    target = t.random_id_in_bucket(252, rng)
    assert t.bucket_index(target) == 252
    t.touch(target, 3600.0)
    assert 252 not in t.buckets_to_refresh(3601.0, 3600.0)
