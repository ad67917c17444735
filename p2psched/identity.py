"""A node's identity: its Ed25519 key pair, the node id derived from it, and its key file.

Owns: creating, loading and checking the key file in the node's data directory.
Promises: the node id is SHA-256 of the raw public key, so nobody can claim an id they hold no key
for; an id costs work (S/Kademlia's static puzzle: SHA-256 of the id starts with `id_bits` zero
bits, a network parameter), so identities are not free; the key file is written with mode 0600;
a missing, unreadable, corrupt or too cheap key file raises `IdentityError` naming the file and
the fix, and is never silently replaced by a new identity.

The network's `id_bits` is `DEFAULT_ID_BITS` unless the command line's `--id-bits`, else the
config file's `[dht] id_bits`, else the environment variable `P2PSCHED_ID_BITS` says otherwise
(`use_network_id_bits`); every node of one network must agree on it. Devnets and tests use a
small one.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2psched.home import default_data_dir as default_data_dir
from p2psched.home import private_dir

NODE_ID_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_FILE_NAME = "identity.key"
# About a second of one core per identity: one try (a key pair and two hashes) takes about 30 µs
# here, and 2**15 of them are needed on average.
DEFAULT_ID_BITS = 15
ID_BITS_ENV = "P2PSCHED_ID_BITS"
# The file holds a short header so a wrong file (or a truncated one) is recognised as such.
_KEY_FILE_MAGIC = b"p2psched-ed25519-v1\n"


class IdentityError(Exception):
    """A key file problem the user can fix; the message names the file and the fix."""


def node_id_of(public_key: bytes) -> bytes:
    """The node id that belongs to a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).digest()


def network_id_bits() -> int:
    """The work an id must show on this network: `P2PSCHED_ID_BITS`, else `DEFAULT_ID_BITS`."""
    raw = os.environ.get(ID_BITS_ENV, "")
    if not raw:
        return DEFAULT_ID_BITS
    if not raw.isdigit() or int(raw) > 32:
        raise IdentityError(f"{ID_BITS_ENV}={raw!r}: give a number of bits from 0 to 32")
    return int(raw)


def use_network_id_bits(bits: int) -> None:
    """Make `bits` this network's id_bits for this process and every node process it starts
    (they inherit `P2PSCHED_ID_BITS`): what `--id-bits` does."""
    if not 0 <= bits <= 32:
        raise IdentityError(f"id_bits {bits}: give a number of bits from 0 to 32")
    os.environ[ID_BITS_ENV] = str(bits)


def id_has_work(node_id: bytes, bits: int) -> bool:
    """Whether `node_id` solves the static puzzle: SHA-256 of it starts with `bits` zero bits.
    Checking costs one hash; finding one costs about 2**bits key pairs."""
    return int.from_bytes(hashlib.sha256(node_id).digest()[:4], "big") >> (32 - bits) == 0


_P25519 = 2**255 - 19
# The y coordinates of the eight points of small order (libsodium's blocklist): a key there is
# no one's. OpenSSL verifies degenerate signatures under such a key for any message, and X25519
# with its image gives no secret. Both are refused, so such a key can neither sign nor MAC.
_Y8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
_SMALL_ORDER_Y = frozenset({0, 1, _P25519 - 1, _Y8, _P25519 - _Y8})


def usable_public_key(public_key: bytes) -> bool:
    """A 32-byte Ed25519 encoding that is canonical and not a point of small order."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        return False
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    return y < _P25519 and y not in _SMALL_ORDER_Y


def x25519_public_of(public_key: bytes) -> bytes:
    """The X25519 public key that belongs to an Ed25519 public key: the birational map of
    RFC 7748 §4.1, u = (1 + y) / (1 - y), as libsodium's crypto_sign_ed25519_pk_to_curve25519.

    Lets two nodes agree a key from nothing but each other's identity key. Raises ValueError for
    an encoding that is no point's.
    """
    if not usable_public_key(public_key):
        raise ValueError(
            "not a usable Ed25519 public key (wrong size, non-canonical or small order)"
        )
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, -1, _P25519) % _P25519).to_bytes(32, "little")


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `public_key`'s signature of `message`; never raises on bad input."""
    if not usable_public_key(public_key) or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Identity:
    """An Ed25519 key pair and the node id it gives."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    node_id: bytes

    @classmethod
    def generate(cls, id_bits: int | None = None) -> Identity:
        """A new key pair whose id solves the puzzle at `id_bits` (the network's by default)."""
        bits = network_id_bits() if id_bits is None else id_bits
        # 2**(bits + 6) tries fail with probability e**-64: never, but the loop is bounded.
        for _ in range(1 << (bits + 6)):
            identity = cls.from_private_key(Ed25519PrivateKey.generate())
            if id_has_work(identity.node_id, bits):
                return identity
        raise AssertionError("no key pair solved the id puzzle")

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Identity:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private_key=key, public_key=public, node_id=node_id_of(public))

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def x25519_private_bytes(self) -> bytes:
        """The X25519 secret matching `x25519_public_of(self.public_key)`: Ed25519's own secret
        scalar, the first half of SHA-512 of the seed (X25519 applies the clamping)."""
        return hashlib.sha512(self.private_bytes()).digest()[:32]

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )


def create_identity(data_dir: Path) -> Identity:
    """Create a new identity in `data_dir`; refuses to overwrite an existing key file."""
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        raise IdentityError(
            f"{path} already exists: refusing to replace this node's identity. "
            "Use another --data-dir for a new node."
        )
    private_dir(data_dir)
    identity = Identity.generate()
    # O_EXCL + mode 0600 at creation: the secret is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_KEY_FILE_MAGIC + identity.private_bytes().hex().encode() + b"\n")
    return identity


def load_identity(data_dir: Path) -> Identity:
    """Load the identity in `data_dir`, raising `IdentityError` on any problem with the file."""
    path = data_dir / KEY_FILE_NAME
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(
            f"{path} is missing: this data directory has no node identity. "
            f"Restore the file from a backup, or run `p2psched init --data-dir {data_dir}` "
            "to create a new identity (peers will see a different node)."
        ) from None
    except OSError as e:
        raise IdentityError(
            f"{path} cannot be read ({e.strerror}); check its permissions."
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`."
        )
    if not raw.startswith(_KEY_FILE_MAGIC):
        raise IdentityError(
            f"{path} is not a p2psched key file (bad header); restore it from a backup, "
            "or move it away and run `p2psched init` to create a new identity."
        )
    try:
        secret = bytes.fromhex(raw[len(_KEY_FILE_MAGIC) :].decode("ascii").strip())
        if len(secret) != 32:
            raise ValueError("wrong length")
        key = Ed25519PrivateKey.from_private_bytes(secret)
    except (UnicodeDecodeError, ValueError):
        raise IdentityError(
            f"{path} is corrupt (the key is not 32 hex-encoded bytes); restore it from a backup, "
            "or move it away and run `p2psched init` to create a new identity."
        ) from None
    identity = Identity.from_private_key(key)
    if not id_has_work(identity.node_id, bits := network_id_bits()):
        raise IdentityError(
            f"{path} holds an identity made without the work this network asks of an id "
            f"({bits} bits: made before ids cost work, or for a devnet); peers would not take "
            f"it. Move the file away and run `p2psched init --data-dir {data_dir} "
            f"--id-bits {bits}` for a new identity (peers will see a different node)."
        )
    return identity


def load_or_create_identity(data_dir: Path) -> Identity:
    """Load the identity; create one only when `data_dir` is new (absent or empty).

    A data directory that already holds files but no key file is an error, not a fresh start:
    the key was lost or deleted, and a silent new identity would hide that.
    """
    if not (data_dir / KEY_FILE_NAME).exists():
        if not data_dir.exists() or not any(data_dir.iterdir()):
            return create_identity(data_dir)
    return load_identity(data_dir)


def identity_for_a_look(data_dir: Path) -> Identity:
    """The identity in `data_dir` if it holds one, else a new one kept nowhere: a command that
    only looks (a DHT get, a search for workers) leaves no data directory behind."""
    if (data_dir / KEY_FILE_NAME).exists():
        return load_identity(data_dir)
    return Identity.generate()
