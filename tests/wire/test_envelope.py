"""Authenticated datagrams, with hostile input: MACs and first-contact signatures,
tampering, replays, clocks, bounded peer state and keys of no one."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psched.identity import Identity
from p2psched.wire.envelope import HEADER_BYTES, KIND_MAC, KIND_SIGNED, Authenticator, Rejected

NOW = 1_800_000_000.0
LIMIT = 8192


def pair() -> tuple[Authenticator, Authenticator]:
    return (
        Authenticator(Identity.generate(), max_datagram=LIMIT),
        Authenticator(Identity.generate(), max_datagram=LIMIT),
    )


def rejects(auth: Authenticator, data: bytes, reason: str, now: float = NOW) -> None:
    with pytest.raises(Rejected) as e:
        auth.open(data, now)
    assert e.value.reason == reason


def test_mac_datagram_round_trip_names_the_sender() -> None:
    a, b = pair()
    opened = b.open(a.seal(b"hello", b.identity.public_key, NOW), NOW)
    assert opened.body == b"hello"
    assert opened.sender_id == a.identity.node_id
    assert opened.sender_public_key == a.identity.public_key
    # and back, with the same pair key
    assert a.open(b.seal(b"hi", a.identity.public_key, NOW), NOW).body == b"hi"


def test_first_contact_by_address_is_signed() -> None:
    a, b = pair()
    data = a.seal(b"hello", None, NOW)
    assert data[2] == KIND_SIGNED and len(data) == HEADER_BYTES + 64 + len(b"hello")
    assert b.open(data, NOW).sender_id == a.identity.node_id
    mac = a.seal(b"hello", b.identity.public_key, NOW)
    assert mac[2] == KIND_MAC and len(mac) == HEADER_BYTES + 16 + len(b"hello")


def changed(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


def test_tampered_datagrams_are_rejected() -> None:
    a, b = pair()
    sealed = a.seal(b"hello", b.identity.public_key, NOW)
    rejects(b, sealed[:-1] + b"p", "bad_mac")  # the body
    rejects(b, changed(sealed, 3, Identity.generate().public_key), "bad_mac")  # another sender
    rejects(b, changed(sealed, 1, b"\x01"), "bad_mac")  # claims client mode after the fact
    rejects(b, changed(sealed, 35, (int(NOW * 1e6) + 5).to_bytes(8, "big")), "bad_mac")  # counter
    signed = a.seal(b"hello", None, NOW)
    rejects(b, signed[:-1] + b"p", "bad_signature")
    rejects(b, changed(signed, 2, bytes([KIND_MAC])), "bad_mac")  # a signature is no MAC
    rejects(b, changed(sealed, 2, b"\x07"), "malformed")  # unknown kind
    rejects(b, sealed[: HEADER_BYTES + 10], "malformed")  # cut inside the MAC


def test_a_datagram_for_another_node_does_not_open() -> None:
    a, b = pair()
    c = Authenticator(Identity.generate(), max_datagram=LIMIT)
    rejects(c, a.seal(b"for b", b.identity.public_key, NOW), "bad_mac")


def test_replays_are_rejected_and_reordering_within_the_window_is_not() -> None:
    a, b = pair()
    sealed = [a.seal(b"m%d" % i, b.identity.public_key, NOW) for i in range(10)]
    for data in reversed(sealed):  # out of order, but inside the window
        b.open(data, NOW)
    for data in sealed:
        rejects(b, data, "replayed")
    assert b.rejected["replayed"] == 10


def test_replay_window_slides() -> None:
    a, b = pair()
    first = a.seal(b"first", b.identity.public_key, NOW)
    b.open(first, NOW)
    for i in range(100):
        b.open(a.seal(b"%d" % i, b.identity.public_key, NOW), NOW)
    rejects(b, first, "replayed")


def test_stale_and_future_datagrams_are_rejected() -> None:
    a, b = pair()
    rejects(b, a.seal(b"old", b.identity.public_key, NOW - 31), "stale")
    rejects(b, a.seal(b"future", b.identity.public_key, NOW + 6), "ahead")
    late, fast = pair()[0], pair()[0]  # fresh senders: a sender's own counter only goes up
    b.open(late.seal(b"late", b.identity.public_key, NOW - 29), NOW)
    b.open(fast.seal(b"a bit ahead", b.identity.public_key, NOW + 4), NOW)


def test_oversized_malformed_and_self_sent_datagrams_are_rejected() -> None:
    a, b = pair()
    rejects(b, b"\x00" * (LIMIT + 1), "oversized")
    rejects(b, b"\x93\x01\x02", "malformed")
    data = a.seal(b"hello", b.identity.public_key, NOW)
    rejects(b, changed(data, 0, b"\x02"), "malformed")  # version
    rejects(b, data[:20], "malformed")
    rejects(b, b.seal(b"me", None, NOW), "from_self")
    rejects(b, data[:-3], "bad_mac")


def test_low_order_key_is_rejected() -> None:
    _, b = pair()
    # An Ed25519 encoding whose X25519 image is a low-order point gives no usable shared secret.
    zero_u = (2**255 - 19 - 1).to_bytes(32, "little")  # y = -1 maps to u = 0
    data = bytes((1, 0, KIND_MAC)) + zero_u + int(NOW * 1e6).to_bytes(8, "big") + bytes(16) + b"x"
    rejects(b, data, "bad_key")


def test_peer_state_is_bounded_and_a_dropped_window_still_refuses_its_replays() -> None:
    b = Authenticator(Identity.generate(), max_datagram=LIMIT, max_peers=8, freshness=30)
    senders = [Authenticator(Identity.generate(), max_datagram=LIMIT) for _ in range(20)]
    first = senders[0].seal(b"x", b.identity.public_key, NOW + 4)  # a fast clock, even
    b.open(first, NOW)
    for i, s in enumerate(senders[1:]):  # newcomers are never locked out: old windows go
        t = NOW + 5 + i / 1000  # clocks move on: floors left by dropped windows are past
        b.open(s.seal(b"x", b.identity.public_key, t), t)
    assert b.peer_count == 8
    rejects(b, first, "replayed", NOW + 20)  # still fresh, its window long gone: refused
    b.open(senders[0].seal(b"y", b.identity.public_key, NOW + 20), NOW + 20)  # new ones pass


def test_small_order_keys_can_neither_sign_nor_mac() -> None:
    """OpenSSL accepts a degenerate signature under the identity point for any message; such a
    key must not get a datagram through."""
    _, b = pair()
    identity_point = b"\x01" + bytes(31)
    degenerate = b"\x01" + bytes(63)  # R = identity, S = 0
    header = bytes((1, 0, KIND_SIGNED)) + identity_point + int(NOW * 1e6).to_bytes(8, "big")
    rejects(b, header + degenerate + b"\x92\x01\x05", "bad_signature")
    for y in (
        0,
        2**255 - 19 - 1,
        0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,
    ):
        key = y.to_bytes(32, "little")
        header = bytes((1, 0, KIND_MAC)) + key + int(NOW * 1e6).to_bytes(8, "big")
        rejects(b, header + bytes(16) + b"x", "bad_key")


def test_junk_does_not_push_genuine_keys_out_of_the_cache() -> None:
    b = Authenticator(Identity.generate(), max_datagram=LIMIT, max_peers=4)
    a = Authenticator(Identity.generate(), max_datagram=LIMIT)
    b.open(a.seal(b"hi", b.identity.public_key, NOW), NOW)
    for _ in range(20):
        junk = (
            bytes((1, 0, KIND_MAC))
            + Identity.generate().public_key
            + int(NOW * 1e6).to_bytes(8, "big")
        )
        rejects(b, junk + bytes(16) + b"x", "bad_mac")
    assert a.identity.public_key in b._keys


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_rejected(data: bytes) -> None:
    _, b = pair_cached
    try:
        b.open(data, NOW)
    except Rejected:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_rejected(pos: int, value: int) -> None:
    a, b = pair_cached
    data = bytearray(a.seal(b"payload" * 10, b.identity.public_key, NOW))
    pos %= len(data)
    if data[pos] == value:
        return
    data[pos] = value
    with pytest.raises(Rejected):
        b.open(bytes(data), NOW)


pair_cached = pair()


def test_fast_clocks_cannot_push_replay_floors_far_ahead() -> None:
    """Windows dropped by a flood of identities leave floors at most `ahead` seconds in the
    future, so an honest peer sharing a slot is refused for a few seconds at most."""
    b = Authenticator(Identity.generate(), max_datagram=LIMIT, max_peers=8, freshness=30)
    flood = [Authenticator(Identity.generate(), max_datagram=LIMIT) for _ in range(600)]
    for i, s in enumerate(flood):  # clocks 29 s ahead are refused; 4.9 s ahead are taken
        with contextlib.suppress(Rejected):  # (some of those share slots with each other)
            b.open(s.seal(b"x", b.identity.public_key, NOW + (29 if i % 2 else 4.9)), NOW)
    honest = [Authenticator(Identity.generate(), max_datagram=LIMIT) for _ in range(40)]
    accepted = 0
    for i, h in enumerate(honest):
        later = NOW + 5 + i / 1000  # a moment later each (they push each other's windows out)
        try:
            b.open(h.seal(b"hi", b.identity.public_key, later), later)
            accepted += 1
        except Rejected:
            pass
    assert accepted == len(honest)
