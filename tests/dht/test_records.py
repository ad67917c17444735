"""The multi-value record store, pure: versions, signatures, caps, expiry and paging."""

from __future__ import annotations

import os

from p2psched.dht.records import MAX_VALUE_BYTES, Record, RecordStore, StoreLimits
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
        assert store.put(rec(p), NOW) is None
    assert store.put(rec(pubs[3]), NOW) == "key full"
    # An existing publisher may still update its record in a full key.
    assert store.put(rec(pubs[0], seq=2), NOW) is None
    p = pubs[0]
    assert store.put(rec(p, key=b"k" * 32), NOW) is None
    assert store.put(rec(p, key=b"j" * 32), NOW) == "publisher over its record limit"
    assert store.put(rec(pubs[1], key=b"k" * 32), NOW) is None
    assert store.put(rec(pubs[2], key=b"k" * 32), NOW) == "store full"
    assert store.put(rec(pubs[3], key=b"z" * 32, ttl=7200), NOW) == "expiry more than 3600s ahead"
    assert len(store) == 5


def test_bytes_held_are_capped_and_released() -> None:
    store = RecordStore(StoreLimits(max_bytes=3000))
    a, b, c = (Identity.generate() for _ in range(3))
    assert store.put(rec(a, b"x" * 1000, ttl=10), NOW) is None
    assert store.put(rec(b, b"x" * 1000), NOW) is None
    assert store.put(rec(c, b"x" * 1000), NOW) == "store full"
    assert store.put(rec(b, b"y" * 1000, seq=2), NOW) is None  # a same-size update fits
    store.expire(NOW + 10)
    assert store.bytes_held < 1500
    assert store.put(rec(c, b"x" * 1000), NOW + 10) is None


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
