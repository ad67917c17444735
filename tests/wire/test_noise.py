"""The secure channel's protocol core, sans I/O: a Noise XX handshake bound to node
identities, then encrypted frames; what a tampering, replaying or forging peer gets."""

from __future__ import annotations

import pytest

from p2psched.identity import Identity
from p2psched.wire.codec import decode
from p2psched.wire.noise import (
    MAX_FRAME,
    MAX_HANDSHAKE_MESSAGE,
    NOISE_MAX,
    ChannelError,
    FrameTooLarge,
    IdWithoutWork,
    SecureSession,
)
from tests.harness.hostile import free_identity


def _pair(a: Identity, b: Identity, **kw: object) -> tuple[SecureSession, SecureSession]:
    """Two sessions with the handshake run between them."""
    i = SecureSession(a, initiator=True, expected_peer=b.node_id, **kw)  # type: ignore[arg-type]
    r = SecureSession(b, initiator=False, **kw)  # type: ignore[arg-type]
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    return i, r


def test_handshake_proves_both_identities() -> None:
    a, b = Identity.generate(), Identity.generate()
    i, r = _pair(a, b)
    assert i.peer is not None and i.peer.node_id == b.node_id
    assert r.peer is not None and r.peer.node_id == a.node_id and r.peer.public_key == a.public_key


def test_frames_cross_in_order_and_large_ones_are_split() -> None:
    i, r = _pair(Identity.generate(), Identity.generate())
    big = bytes(range(256)) * 1000  # 256 KB: several Noise messages
    i.seal(b"one")
    i.seal(big)
    i.seal(b"")
    wire = i.data_to_send()
    for k in range(0, len(wire), 999):  # the transport may cut anywhere
        r.receive_data(wire[k : k + 999])
    assert r.frames() == [b"one", big, b""]


def test_dialler_refuses_a_node_other_than_the_one_it_asked_for() -> None:
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    i = SecureSession(a, initiator=True, expected_peer=c.node_id)
    r = SecureSession(b, initiator=False)
    r.receive_data(i.data_to_send())
    with pytest.raises(ChannelError, match="not .* that was asked for"):
        i.receive_data(r.data_to_send())
    assert i.peer is None


def test_altered_byte_ends_the_session() -> None:
    i, r = _pair(Identity.generate(), Identity.generate())
    i.seal(b"pay 1 unit")
    wire = bytearray(i.data_to_send())
    wire[-3] ^= 1
    with pytest.raises(ChannelError, match="failed authentication"):
        r.receive_data(bytes(wire))
    assert r.frames() == []


def test_replayed_message_fails() -> None:
    i, r = _pair(Identity.generate(), Identity.generate())
    i.seal(b"run task 7")
    wire = i.data_to_send()
    r.receive_data(wire)
    assert r.frames() == [b"run task 7"]
    with pytest.raises(ChannelError, match="failed authentication"):
        r.receive_data(wire)


def test_identity_signature_must_cover_the_noise_key() -> None:
    """A responder that presents someone else's identity payload cannot make it fit its own
    Noise static key."""
    a, b, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    honest = SecureSession(b, initiator=False)
    forger = SecureSession(mallory, initiator=False)
    forger._payload = honest._payload  # type: ignore[method-assign]  # b's signed key, not its own
    i = SecureSession(a, initiator=True, expected_peer=b.node_id)
    forger.receive_data(i.data_to_send())
    with pytest.raises(ChannelError, match="did not sign its Noise static key"):
        i.receive_data(forger.data_to_send())


def test_a_frame_over_the_receivers_limit_is_refused_at_its_length() -> None:
    sender, receiver = _pair(Identity.generate(), Identity.generate(), max_frame=1000)
    sender.seal(b"x" * 500_000)  # a sender may send up to the protocol's limit, not the peer's
    wire = sender.data_to_send()
    # Refused once its length is read: with the first Noise message of it, of eight.
    with pytest.raises(FrameTooLarge, match="500000 bytes, over the 1000-byte limit"):
        receiver.receive_data(wire[: 2 + NOISE_MAX])
    with pytest.raises(ChannelError, match="over the 16777216-byte limit"):
        sender.seal(bytes(MAX_FRAME + 1))


def test_the_limit_raised_once_the_peer_said_what_it_is() -> None:
    sender, receiver = _pair(Identity.generate(), Identity.generate(), max_frame=1000)
    sender.seal(b"hello")
    receiver.receive_data(sender.data_to_send())
    assert receiver.frames() == [b"hello"]
    receiver.set_max_frame(10_000)
    sender.seal(b"x" * 5000)
    receiver.receive_data(sender.data_to_send())
    assert receiver.frames() == [b"x" * 5000]


def test_a_handshake_message_is_refused_at_its_length_when_over_a_handshakes_size() -> None:
    """A stranger cannot make a node wait for 64 KiB before its handshake fails: the length
    alone, two bytes, refuses it."""
    responder = SecureSession(Identity.generate(), initiator=False)
    with pytest.raises(ChannelError, match="handshake message of 65535 bytes"):
        responder.receive_data(b"\xff\xff" + b"\x00" * 10)
    initiator = SecureSession(Identity.generate(), initiator=True)
    with pytest.raises(ChannelError, match=f"over the {MAX_HANDSHAKE_MESSAGE}-byte limit"):
        initiator.receive_data((MAX_HANDSHAKE_MESSAGE + 1).to_bytes(2, "big"))


def test_garbage_instead_of_a_handshake() -> None:
    r = SecureSession(Identity.generate(), initiator=False)
    with pytest.raises(ChannelError, match="handshake failed"):
        r.receive_data(b"\x00\x05GET /")


def test_a_peer_whose_id_shows_no_work_is_refused_either_way_and_a_dialler_told_why() -> None:
    """An identity that cost nothing (S/Kademlia's puzzle unsolved at the network's id_bits)
    opens no channel, and no dialler talks to one; a refused dialler reads the reason."""
    free, real = free_identity(), Identity.generate()
    i = SecureSession(free, initiator=True, expected_peer=real.node_id)
    r = SecureSession(real, initiator=False)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    with pytest.raises(IdWithoutWork, match="shows no work at this network's id_bits=4"):
        r.receive_data(i.data_to_send())
    assert r.peer is None
    i.receive_data(r.data_to_send())
    (why,) = i.frames()
    assert decode(why)["t"] == "error" and "shows no work" in decode(why)["reason"]

    i = SecureSession(real, initiator=True, expected_peer=free.node_id)
    r = SecureSession(free, initiator=False)
    r.receive_data(i.data_to_send())
    with pytest.raises(IdWithoutWork, match="shows no work"):
        i.receive_data(r.data_to_send())
    assert i.peer is None and i.data_to_send() == b""
