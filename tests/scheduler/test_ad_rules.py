"""The rules that keep throwaway identities from taking over discovery, pure: the id puzzle, the
shard a worker's ad lands in, which ad addresses a node keeps, and what a holder stores under an
ad key (`check_ad_record`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psched.dht.records import Record
from p2psched.identity import Identity, IdentityError, create_identity, id_has_work, load_identity
from p2psched.resources.need import MAX_AD_LIFETIME, capability_keys, is_ad_key
from p2psched.scheduler.ads import WorkerAd, check_ad_record
from p2psched.wire.address import ad_address_problem
from tests.harness.profiles import profile

NOW = 1_800_000_000.0


def test_ids_show_the_work_asked_and_cheap_key_files_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = Identity.generate(10)
    assert id_has_work(ident.node_id, 10)
    assert sum(id_has_work(Identity.generate(0).node_id, 8) for _ in range(64)) < 16
    create_identity(tmp_path)
    monkeypatch.setenv("P2PSCHED_ID_BITS", "30")
    with pytest.raises(IdentityError, match="p2psched init"):
        load_identity(tmp_path)


def test_a_workers_shard_depends_on_its_id_and_the_capability() -> None:
    ids = [Identity.generate().node_id for _ in range(64)]
    shards = {capability_keys(profile(), i)["any"] for i in ids}
    assert len(shards) > 8  # spread over the 16 shards, not all in one
    assert all(is_ad_key(k) for k in shards)
    # Not the id's first bytes (which a free identity could pick): ids equal there spread.
    alike = [bytes(4) + bytes([i]) * 28 for i in range(32)]
    assert len({capability_keys(profile(), i)["any"] for i in alike}) > 4


@pytest.mark.parametrize(
    ("address", "seen_from", "kept"),
    [
        ("9.9.9.9:7000", "1.1.1.1", True),
        ("[2001:db8::1]:7000", None, True),
        ("9.9.9.9:7000/relay/" + "ab" * 32, "1.1.1.1", True),
        ("evil.example:7000", None, False),
        ("gate.example:7000/relay/" + "ab" * 32, None, False),
        ("127.0.0.1:7000", "1.1.1.1", False),
        ("192.168.1.20:7000", "1.1.1.1", False),
        ("192.168.1.20:7000", "192.168.1.9", True),
        ("127.0.0.1:7000", "127.0.0.1", True),
        ("127.0.0.1:7000", None, True),
        # IPv6 that reaches a private or loopback IPv4 address is that address's kind
        ("[2002:a00:1::1]:7000", "1.1.1.1", False),  # 6to4 of 10.0.0.1
        ("[64:ff9b::7f00:1]:7000", "1.1.1.1", False),  # NAT64 of 127.0.0.1
        ("[64:ff9b::909:909]:7000", "1.1.1.1", True),  # NAT64 of 9.9.9.9
        # no one's
        ("224.0.0.1:7000", None, False),
        ("0.0.0.0:7000", None, False),
        ("[ff02::1]:7000", None, False),
    ],
)
def test_which_ad_addresses_a_node_keeps(address: str, seen_from: str | None, kept: bool) -> None:
    assert (ad_address_problem(address, seen_from) is None) is kept


def _ad(ident: Identity, key: bytes | None = None, ttl: float = 100.0, **kw: object) -> Record:
    p = profile(**kw)
    key = key or capability_keys(p, ident.node_id)["any"]
    return Record.create(ident, key, p.encode(), seq=1, expires_ms=int((NOW + ttl) * 1000))


def test_a_holder_stores_under_an_ad_key_only_a_real_ad() -> None:
    ident = Identity.generate()
    assert check_ad_record(_ad(ident, addresses=("9.9.9.9:1",)), "9.9.9.9", NOW) is None
    other = capability_keys(profile(), Identity.generate().node_id)["any"]
    misplaced = _ad(ident, other)
    if other != capability_keys(profile(), ident.node_id)["any"]:
        assert "misplaced" in (check_ad_record(misplaced, "9.9.9.9", NOW) or "")
    assert "at most" in (check_ad_record(_ad(ident, ttl=MAX_AD_LIFETIME + 60), None, NOW) or "")
    junk = Record.create(ident, other, b"\xc1junk", seq=1, expires_ms=int((NOW + 60) * 1000))
    assert "not a worker's ad" in (check_ad_record(junk, None, NOW) or "")
    named = _ad(ident, addresses=("evil.example:1",))
    assert "host" in (check_ad_record(named, None, NOW) or "")
    private = _ad(ident, addresses=("10.0.0.5:1",))
    assert check_ad_record(private, "9.9.9.9", NOW) is not None
    assert check_ad_record(private, "10.0.0.7", NOW) is None
    with pytest.raises(ValueError, match="address"):
        WorkerAd.from_record(named)
    # Other keys are not the ads' rules' business.
    plain = Record.create(ident, b"k" * 32, b"x", seq=1, expires_ms=int((NOW + 9999) * 1000))
    assert check_ad_record(plain, None, NOW) is None
