"""The secure channel's protocol core: a Noise XX handshake bound to Ed25519 node identities,
then length-prefixed, encrypted application frames. Sans-I/O: bytes in, bytes and frames out.

Owns: the handshake (through the `noiseprotocol` package, as libp2p-noise does it: a fresh X25519
static key per session, signed by the node's identity key inside the handshake payload), the
peer check, and framing.
Promises: `peer` is set only once the other side has proven it holds the identity key it named, and
that key's node id shows the network's work (`identity.id_has_work` at `id_bits`: one hash, so a
worker's per-peer limits cannot be escaped with identities that cost nothing); a dialler that named
the node it expected gets `ChannelError` unless it is exactly that node; every frame is
authenticated (an altered or replayed byte fails decryption and ends the session); no frame larger
than `max_frame` is ever buffered, nor a handshake message larger than `MAX_HANDSHAKE_MESSAGE`: each
is refused at its length, before its bytes. The limit on frames received may be raised once the peer
has said what it is (`set_max_frame`): a stranger gets a few KiB; the limit on frames sent is the
protocol's, `MAX_FRAME`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

from p2psched.identity import (
    Identity,
    id_has_work,
    network_id_bits,
    node_id_of,
    usable_public_key,
    verify,
)
from p2psched.wire import schema
from p2psched.wire.codec import DecodeError, decode, encode

PROTOCOL = b"Noise_XX_25519_ChaChaPoly_SHA256"
PROLOGUE = b"p2psched/channel/1"
# What the identity key signs, so that no signature it makes elsewhere can stand in for this one.
STATIC_KEY_CONTEXT = b"p2psched-noise-static-key:"
NOISE_MAX = 65535  # a Noise message, tag included, by the spec
TAG = 16
CHUNK = NOISE_MAX - TAG
MAX_FRAME = 16 << 20  # the largest frame anyone sends: a task's input or result at the most
# Ours are under 300 bytes (a key, a signature and Noise's own); a Noise message may be 64 KiB.
MAX_HANDSHAKE_MESSAGE = 1024

_HANDSHAKE_PAYLOAD = schema.mapping({"key": schema.bin_exact(32), "sig": schema.bin_exact(64)})


class ChannelError(Exception):
    """The session cannot go on; the message says why (shown to whoever opened it)."""


class IdWithoutWork(ChannelError):
    """The peer's node id shows no work at this network's `id_bits`. A responder that refuses
    its dialler so has queued one frame saying why, `{"t": "error", "reason": ...}` (the shape of
    a worker's refusal), for the shell to send before it closes."""


class FrameTooLarge(ChannelError):
    """The peer began a frame over this end's limit (the session cannot go on, but may still
    send: to say why)."""


@dataclass(frozen=True, slots=True)
class Peer:
    node_id: bytes
    public_key: bytes


class SecureSession:
    """One side of one connection. Feed it what arrives with `receive_data`; send what
    `data_to_send` returns; once `peer` is set, `seal` frames and read `frames()`."""

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        expected_peer: bytes | None = None,
        max_frame: int = MAX_FRAME,
        id_bits: int | None = None,
    ) -> None:
        self._identity = identity
        # The work a peer's id must show: the network's (`network_id_bits`) unless given.
        self._id_bits = network_id_bits() if id_bits is None else id_bits
        self._initiator = initiator
        self._expected = expected_peer
        self._max_frame = max_frame  # of frames received (see `set_max_frame`)
        static = X25519PrivateKey.generate()
        self._static_public = static.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._noise = NoiseConnection.from_name(PROTOCOL)
        if initiator:
            self._noise.set_as_initiator()
        else:
            self._noise.set_as_responder()
        self._noise.set_prologue(PROLOGUE)
        self._noise.set_keypair_from_private_bytes(
            Keypair.STATIC,
            static.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            ),
        )
        self._noise.start_handshake()
        # The library forgets the remote static key when the handshake ends; keep its state.
        self._handshake: Any = self._noise.noise_protocol.handshake_state
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._step = 0  # handshake messages seen so far, in either direction
        self._partial = bytearray()  # plaintext of a frame still arriving
        self._frames: list[bytes] = []
        self.peer: Peer | None = None
        if initiator:
            self._write_handshake(b"")

    # -- bytes in and out ---------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def receive_data(self, data: bytes | bytearray) -> None:
        """Take bytes from the transport. Raises `ChannelError` when they cannot be from the
        peer this session is with; the connection must then be closed."""
        self._inbox += data
        while len(self._inbox) >= 2:
            (n,) = struct.unpack_from(">H", self._inbox)
            if self.peer is None and n > MAX_HANDSHAKE_MESSAGE:
                raise ChannelError(
                    f"handshake message of {n} bytes, over the {MAX_HANDSHAKE_MESSAGE}-byte "
                    "limit: not a p2psched node"
                )
            if len(self._inbox) < 2 + n:
                return
            message = bytes(self._inbox[2 : 2 + n])
            del self._inbox[: 2 + n]
            if self.peer is None:
                self._read_handshake(message)
            else:
                self._read_transport(message)

    def frames(self) -> list[bytes]:
        """Whole frames received since the last call, in order."""
        out, self._frames = self._frames, []
        return out

    def incoming(self) -> int:
        """The size of the frame being received, once its length has come (0 when none)."""
        if len(self._partial) < 4:
            return 0
        (n,) = struct.unpack_from(">I", self._partial)
        return int(n)

    def set_max_frame(self, max_frame: int) -> None:
        """From now on take frames of up to `max_frame` bytes (a frame whose length has
        already been read was held to the limit then)."""
        self._max_frame = max_frame

    def seal(self, frame: bytes) -> None:
        """Queue one frame for sending (see `data_to_send`)."""
        if self.peer is None:
            raise RuntimeError("the handshake has not finished")
        self._seal(frame)

    def _seal(self, frame: bytes) -> None:
        if len(frame) > MAX_FRAME:
            raise ChannelError(f"frame of {len(frame)} bytes is over the {MAX_FRAME}-byte limit")
        plain = struct.pack(">I", len(frame)) + frame
        for i in range(0, len(plain), CHUNK):
            self._push(self._noise.encrypt(plain[i : i + CHUNK]))

    # -- handshake --------------------------------------------------------------------------

    def _payload(self) -> bytes:
        sig = self._identity.sign(STATIC_KEY_CONTEXT + self._static_public)
        return encode({"key": self._identity.public_key, "sig": sig})

    def _write_handshake(self, payload: bytes) -> None:
        self._push(self._noise.write_message(payload))
        self._step += 1

    def _read_handshake(self, message: bytes) -> None:
        try:
            payload = bytes(self._noise.read_message(message))
        except Exception as e:  # noiseprotocol raises its own zoo for a bad message
            raise ChannelError(
                f"handshake failed ({type(e).__name__}): not a p2psched node, "
                "or the bytes were altered on the way"
            ) from None
        self._step += 1
        if self._step == 1:  # responder got "-> e": answer "<- e, ee, s, es" with our identity
            self._write_handshake(self._payload())
            return
        try:
            self.peer = self._check_identity(payload)
        except IdWithoutWork as e:
            if not self._initiator:  # our keys are set: the dialler may read why it was refused
                self._seal(encode({"t": "error", "reason": str(e)}))
            raise
        if self._step == 2:  # initiator got the responder's identity: send ours, done
            self._write_handshake(self._payload())

    def _check_identity(self, payload: bytes) -> Peer:
        try:
            fields = _HANDSHAKE_PAYLOAD(decode(payload, max_size=256), "handshake")
        except (DecodeError, schema.SchemaError) as e:
            raise ChannelError(f"peer sent a malformed identity ({e})") from None
        key: bytes = fields["key"]
        remote_static: bytes = self._handshake.rs.public_bytes
        if not usable_public_key(key) or not verify(
            key, fields["sig"], STATIC_KEY_CONTEXT + remote_static
        ):
            raise ChannelError("peer's identity key did not sign its Noise static key")
        peer = Peer(node_id_of(key), key)
        if not id_has_work(peer.node_id, self._id_bits):
            raise IdWithoutWork(
                f"peer {peer.node_id.hex()[:16]}…'s node id shows no work at this network's "
                f"id_bits={self._id_bits} (its identity was made for another network, or for "
                "free): it must be made with the network's id_bits"
            )
        if self._expected is not None and peer.node_id != self._expected:
            raise ChannelError(
                f"the node at that address is {peer.node_id.hex()[:16]}…, "
                f"not {self._expected.hex()[:16]}… that was asked for"
            )
        return peer

    # -- transport --------------------------------------------------------------------------

    def _push(self, message: bytes) -> None:
        self._outbox += struct.pack(">H", len(message)) + message

    def _read_transport(self, message: bytes) -> None:
        try:
            plain = self._noise.decrypt(message)
        except Exception:
            raise ChannelError(
                "a frame failed authentication: altered or replayed in transit"
            ) from None
        self._partial += plain
        while len(self._partial) >= 4:
            (n,) = struct.unpack_from(">I", self._partial)
            if n > self._max_frame:
                raise FrameTooLarge(
                    f"peer sent a message of {n} bytes, over the {self._max_frame}-byte limit"
                )
            if len(self._partial) < 4 + n:
                return
            # One copy of the frame, not two (a slice of a bytearray is one already); and the
            # buffer a large frame grew is let go, not kept for the channel's life.
            with memoryview(self._partial) as whole:
                self._frames.append(bytes(whole[4 : 4 + n]))
            if len(self._partial) == 4 + n:
                self._partial = bytearray()
            else:
                del self._partial[: 4 + n]
