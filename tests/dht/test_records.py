"""The multi-value record store, pure: versions, signatures, caps, expiry and paging."""

from __future__ import annotations

import os

import pytest

from p2psched.dht import records as records_module
from p2psched.dht.records import (
    MAX_VALUE_BYTES,
    Record,
    RecordStore,
    StoreLimits,
    source_prefix,
    wider_network,
)
from p2psched.identity import Identity
from p2psched.wire.codec import encode

NOW = 1_800_000_000.0
KEY = bytes(range(32))


def rec(
    ident: Identity, value: bytes = b"v", *, seq: int = 1, ttl: float = 60.0, key: bytes = KEY
) -> Record:
    return Record.create(ident, key, value, seq=seq, expires_ms=int((NOW + ttl) * 1000))


def test_one_key_holds_one_record_per_publisher() -> None:
    store = RecordStore()
    pubs = [Identity.generate() for _ in range(5)]
    for p in pubs:
        assert store.put(rec(p, b"from %s" % p.node_id.hex()[:4].encode()), NOW) is None
    got = store.get(KEY, NOW)
    assert len(got) == 5 == len(store)
    assert {r.publisher_id for r in got} == {p.node_id for p in pubs}


def test_newer_replaces_older_and_never_the_reverse() -> None:
    store = RecordStore()
    p = Identity.generate()
    v1, v2 = rec(p, b"one", seq=1), rec(p, b"two", seq=2)
    assert store.put(v2, NOW) is None
    assert store.put(v1, NOW) == "older than the stored version"
    assert [r.value for r in store.get(KEY, NOW)] == [b"two"]
    v3 = rec(p, b"three", seq=3)
    assert store.put(v3, NOW) is None
    assert [r.value for r in store.get(KEY, NOW)] == [b"three"]
    # The same seq with a later expiry is the publisher's republish: it extends the record.
    again = rec(p, b"three", seq=3, ttl=120)
    assert store.put(again, NOW) is None
    assert store.get(KEY, NOW)[0].expires_ms == again.expires_ms
    assert store.put(v3, NOW) == "older than the stored version"
    assert len(store) == 1


def test_unsigned_forged_and_wrong_key_records_are_refused() -> None:
    store = RecordStore()
    p, mallory = Identity.generate(), Identity.generate()
    good = rec(p, b"real", seq=1)
    assert store.put(good, NOW) is None
    # Mallory signs a newer version in p's name: the signature is checked against p's key.
    forged = Record(KEY, p.public_key, 2, good.expires_ms, b"fake", mallory.sign(b"anything"))
    assert store.put(forged, NOW) == "bad signature"
    blank = Record(KEY, p.public_key, 3, good.expires_ms, b"fake", bytes(64))
    assert store.put(blank, NOW) == "bad signature"
    # A valid record moved to another key no longer verifies (the key is signed too).
    moved = Record(os.urandom(32), *good.to_wire()[1:])  # type: ignore[arg-type]
    assert store.put(moved, NOW) == "bad signature"
    assert [r.value for r in store.get(KEY, NOW)] == [b"real"]


def test_expired_records_vanish_at_once_and_are_swept() -> None:
    store = RecordStore()
    p, q = Identity.generate(), Identity.generate()
    store.put(rec(p, ttl=10), NOW)
    store.put(rec(q, ttl=100), NOW)
    assert len(store.get(KEY, NOW + 9.999)) == 2
    assert [r.publisher_id for r in store.get(KEY, NOW + 10)] == [q.node_id]
    assert store.expire(NOW + 10) == 1
    assert len(store) == 1
    assert store.expire(NOW + 100) == 1
    assert len(store) == 0 and store.get(KEY, NOW + 100) == []
    assert store.put(rec(p, ttl=10), NOW + 11) == "expired"


def test_an_older_version_stays_refused_after_the_newer_one_expired() -> None:
    store = RecordStore(StoreLimits(max_ttl=3600))
    p = Identity.generate()
    old = rec(p, b"old", seq=1, ttl=3000)  # long-lived, and superseded...
    new = rec(p, b"new", seq=2, ttl=10)  # ...by a short-lived newer one, which then lapses
    assert store.put(new, NOW) is None
    assert store.put(old, NOW + 5) == "older than the stored version"
    assert store.put(old, NOW + 11) == "older than the stored version"  # expired, not yet swept
    store.expire(NOW + 20)
    assert store.put(old, NOW + 20) == "older than a version already seen"
    assert store.get(KEY, NOW + 20) == []
    assert store.put(rec(p, b"newer", seq=3, ttl=3000), NOW + 20) is None
    store.expire(NOW + 3700)  # long after: the memory of versions is let go
    assert len(store) == 0


def test_replaced_versions_do_not_expire_the_newer_one() -> None:
    store = RecordStore()
    p = Identity.generate()
    store.put(rec(p, seq=1, ttl=10), NOW)
    store.put(rec(p, seq=2, ttl=100), NOW)
    assert store.expire(NOW + 50) == 0
    assert len(store.get(KEY, NOW + 50)) == 1


def test_caps_per_key_per_publisher_in_total_and_on_ttl() -> None:
    store = RecordStore(
        StoreLimits(max_per_key=3, max_per_publisher=2, max_records=5, max_ttl=3600)
    )
    pubs = [Identity.generate() for _ in range(4)]
    for p in pubs[:3]:
        assert store.put(rec(p), NOW, "203.0.113.1") is None
    # A full key makes room: the oldest of the network holding the most goes.
    assert store.put(rec(pubs[3]), NOW, "198.51.100.1") is None
    assert {r.publisher_id for r in store.get(KEY, NOW)} == {p.node_id for p in pubs[1:]}
    # An existing publisher may still update its record in a full key.
    assert store.put(rec(pubs[1], seq=2), NOW, "203.0.113.1") is None
    p = pubs[1]
    assert store.put(rec(p, key=b"k" * 32), NOW) is None
    assert store.put(rec(p, key=b"j" * 32), NOW) == "publisher over its record limit"
    assert store.put(rec(pubs[2], key=b"k" * 32), NOW) is None
    assert len(store) == 5
    assert store.put(rec(pubs[3], key=b"k" * 32), NOW) is None  # a full store makes room too
    assert len(store) == 5
    assert store.put(rec(pubs[3], key=b"z" * 32, ttl=7200), NOW) == "expiry more than 3600s ahead"


def test_bytes_held_are_capped_and_released() -> None:
    store = RecordStore(StoreLimits(max_bytes=3000))
    a, b, c = (Identity.generate() for _ in range(3))
    assert store.put(rec(a, b"x" * 1000, ttl=10), NOW, "203.0.113.1") is None
    assert store.put(rec(b, b"x" * 1000), NOW, "203.0.113.2") is None
    assert store.put(rec(b, b"y" * 1000, seq=2), NOW, "203.0.113.2") is None  # fits in place
    assert store.bytes_held < 3000
    # Full: the newcomer's room comes from the network holding the most, oldest first.
    assert store.put(rec(c, b"x" * 1000), NOW, "198.51.100.7") is None
    assert {r.publisher_id for r in store.get(KEY, NOW)} == {b.node_id, c.node_id}
    assert store.bytes_held < 3000
    store.expire(NOW + 61)
    assert store.bytes_held == 0


def test_a_full_key_takes_a_new_network_at_the_cost_of_the_largest() -> None:
    """512 throwaway identities from one /24 fill a key; a worker from elsewhere still gets in
    and stays, while the flooding network only displaces its own records."""
    store = RecordStore(StoreLimits(max_per_key=16, max_per_prefix_per_key=64))
    for _ in range(40):
        assert store.put(rec(Identity.generate()), NOW, "203.0.113.9") is None
    assert len(store.get(KEY, NOW)) == 16
    real = Identity.generate()
    assert store.put(rec(real), NOW, "198.51.100.20") is None
    for _ in range(40):
        assert store.put(rec(Identity.generate()), NOW + 1, "203.0.113.77") is None
    held = store.get(KEY, NOW + 1)
    assert real.node_id in {r.publisher_id for r in held}
    assert len(held) == 16


def test_many_48s_of_one_32_do_not_push_out_the_ads_of_other_networks() -> None:
    """512 stores from 512 /48s inside one IPv6 /32 (its holder gets 65,536 for nothing), each
    a source with one record like the honest ones: they are weighed together, so the key
    makes room among them and the ads from elsewhere stay, those there before the flood and
    one that came after it (a tie among single sources would go against that newest one)."""
    store = RecordStore()
    honest = [rec(Identity.generate(0)) for _ in range(4)]
    hosts = ("198.51.100.20", "192.0.2.7", "2001:db8:77:1::5", "203.0.113.9")
    for r, host in zip(honest[:3], hosts, strict=False):
        assert store.put(r, NOW, host) is None
    for n in range(512 + 64):
        if n == 512:
            assert store.put(honest[3], NOW, hosts[3]) is None
        assert store.put(rec(Identity.generate(0)), NOW, f"2a0f:5:{n:x}::1") is None
    held = {r.publisher_id for r in store.get(KEY, NOW)}
    assert len(held) == store.limits.max_per_key
    assert {r.publisher_id for r in honest} <= held


def test_a_tie_goes_against_the_network_seen_last() -> None:
    store = RecordStore(StoreLimits(max_per_key=2))
    first, second = rec(Identity.generate()), rec(Identity.generate())
    assert store.put(first, NOW, "198.51.100.20") is None
    assert store.put(second, NOW, "203.0.113.5") is None
    assert store.put(rec(Identity.generate()), NOW, "192.0.2.7") is None
    assert first.publisher_id in {r.publisher_id for r in store.get(KEY, NOW)}


def test_one_network_holds_at_most_its_share_of_a_key() -> None:
    store = RecordStore(StoreLimits(max_per_prefix_per_key=4))
    first = Identity.generate()
    assert store.put(rec(first), NOW, "2001:db8:1:2::5") is None
    for _ in range(6):
        assert store.put(rec(Identity.generate()), NOW, "2001:db8:1:ff::9") is None  # one /48
    held = store.get(KEY, NOW)
    assert len(held) == 4
    assert first.node_id not in {r.publisher_id for r in held}


def test_a_labs_machines_on_one_private_24_are_each_a_source() -> None:
    """A lab's workers share one private /24: each host counts as its own source, so all of
    them are kept under a key where one public /24 holds at most its share."""
    store = RecordStore(StoreLimits(max_per_prefix_per_key=4))
    for n in range(1, 11):
        assert store.put(rec(Identity.generate()), NOW, f"10.1.2.{n}") is None
    assert len(store.get(KEY, NOW)) == 10
    for n in range(1, 11):
        store.put(rec(Identity.generate(), key=bytes(31) + b"\x01"), NOW, f"198.51.100.{n}")
    assert len(store.get(bytes(31) + b"\x01", NOW)) == 4
    # ... and each is weighed on its own when room is made, not as one of its /16
    assert wider_network(source_prefix("10.1.2.3")) == "10.1.2.3/32"
    assert wider_network(source_prefix("198.51.100.3")) == "198.51.0.0/16"
    assert wider_network(source_prefix("2001:db8:1:2::5")) == "2001:db8::/32"


def test_a_store_filled_by_a_few_networks_takes_newcomers() -> None:
    """The issue's store-wide attack at a small scale: throwaway identities fill the store
    with large records under random keys; a real ad still goes in, and theirs make room."""
    store = RecordStore(StoreLimits(max_bytes=64 * 5000))
    for i in range(4):
        attacker = Identity.generate()
        for _ in range(40):
            r = rec(attacker, os.urandom(4000), key=os.urandom(32))
            store.put(r, NOW, f"203.0.11{i}.1")
    assert store.bytes_held > 60 * 4000
    ad = rec(Identity.generate(), b"a worker's ad")
    assert store.put(ad, NOW, "198.51.100.20") is None
    assert store.get(KEY, NOW) == [ad]


def test_a_store_full_of_bytes_makes_room_at_the_source_holding_the_most_bytes() -> None:
    """A few large records from one network, many small honest ones from another: when the
    bytes run out, the network holding the most bytes pays, not the one with the most
    records."""
    store = RecordStore(StoreLimits(max_bytes=40 * 4200))
    attacker = Identity.generate()
    for _ in range(30):
        assert (
            store.put(rec(attacker, os.urandom(4000), key=os.urandom(32)), NOW, "203.0.113.1")
            is None
        )
    honest = [rec(Identity.generate(), b"ad", key=os.urandom(32)) for _ in range(60)]
    for r in honest:
        assert store.put(r, NOW, "198.51.100.20") is None
    for _ in range(20):  # a third network's large records need room
        store.put(rec(Identity.generate(), os.urandom(4000), key=os.urandom(32)), NOW, "192.0.2.1")
    assert all(store.get(r.key, NOW) == [r] for r in honest)


def test_the_validator_sees_the_record_and_its_sender() -> None:
    seen: list[tuple[Record, str | None]] = []

    def validate(record: Record, source: str | None, now: float) -> str | None:
        seen.append((record, source))
        return "not an ad" if record.value == b"bad" else None

    store = RecordStore(validate=validate)
    p = Identity.generate()
    assert store.put(rec(p, b"bad"), NOW, "203.0.113.1") == "not an ad"
    assert store.put(rec(p, b"good"), NOW, "203.0.113.1") is None
    assert [s for _, s in seen] == ["203.0.113.1", "203.0.113.1"]
    assert len(store) == 1


def test_paging_covers_every_record_once_within_the_budget() -> None:
    store = RecordStore()
    records = [rec(Identity.generate(), os.urandom(300)) for _ in range(40)]
    for r in records:
        store.put(r, NOW)
    budget = 2000
    seen: list[Record] = []
    cursor = None
    for _ in range(100):
        page, cursor = store.page(KEY, cursor, budget, NOW)
        assert page
        assert sum(len(encode(r.to_wire())) for r in page) <= budget
        seen += page
        if cursor is None:
            break
    assert len(seen) == 40
    assert {r.publisher_id for r in seen} == {r.publisher_id for r in records}


def test_largest_value_fits_and_record_wire_round_trips() -> None:
    r = rec(Identity.generate(), b"x" * MAX_VALUE_BYTES)
    assert Record.from_wire(r.to_wire()) == r
    assert r.verify()


def test_making_room_in_a_full_store_weighs_no_source_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past 65,536 sources (one IPv6 /32's /48s) the cache of wider networks missed on every
    source, and a full store parsed each source's network twice per record it took in: about
    a second of the node's time per store at 100,000. Each source's network is found once,
    when it first enters; making room looks it up."""
    store = RecordStore(StoreLimits(max_records=300))
    for n in range(300):
        assert (
            store.put(rec(Identity.generate(), key=os.urandom(32)), NOW, f"2a0f:5:{n:x}::1") is None
        )
    weighed: list[str] = []

    def counted(src: str) -> str:
        weighed.append(src)
        return wider_network(src)

    monkeypatch.setattr(records_module, "wider_network", counted)
    for n in range(5):
        assert store.put(rec(Identity.generate()), NOW, f"198.51.{n}.20") is None
        assert len(store) == 300
    assert len(weighed) <= 2 * 5  # each newcomer's own, once in the store and once in its key
