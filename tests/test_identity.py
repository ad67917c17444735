"""Identity: key files, node ids, signatures, and the errors a user can cause."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from p2psched.identity import (
    KEY_FILE_NAME,
    Identity,
    IdentityError,
    create_identity,
    default_data_dir,
    load_identity,
    load_or_create_identity,
    node_id_of,
    verify,
    x25519_public_of,
)


def test_create_then_load_gives_the_same_identity_and_a_0600_file(tmp_path: Path) -> None:
    created = create_identity(tmp_path / "node")
    path = tmp_path / "node" / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_identity(tmp_path / "node")
    assert loaded.node_id == created.node_id
    assert loaded.node_id == hashlib.sha256(loaded.public_key).digest()


def test_sign_and_verify() -> None:
    a, b = Identity.generate(), Identity.generate()
    sig = a.sign(b"message")
    assert verify(a.public_key, sig, b"message")
    assert not verify(a.public_key, sig, b"messagE")
    assert not verify(b.public_key, sig, b"message")
    assert not verify(a.public_key, sig[:-1], b"message")
    assert not verify(b"short", sig, b"message")


def test_missing_key_file_is_an_error_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_text("something this node kept")
    with pytest.raises(IdentityError) as e:
        load_or_create_identity(tmp_path)
    assert str(tmp_path / KEY_FILE_NAME) in str(e.value)
    assert "p2psched init" in str(e.value)
    assert not (tmp_path / KEY_FILE_NAME).exists()  # no silent new identity


def test_corrupt_key_files_are_errors_and_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    for content in (
        b"",
        b"garbage",
        b"p2psched-ed25519-v1\nzz",
        b"p2psched-ed25519-v1\n" + b"ab" * 31,
    ):
        path.write_bytes(content)
        os.chmod(path, 0o600)
        with pytest.raises(IdentityError, match="corrupt|not a p2psched key file"):
            load_or_create_identity(tmp_path)
        assert path.read_bytes() == content


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    create_identity(tmp_path)
    os.chmod(tmp_path / KEY_FILE_NAME, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(tmp_path)


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    first = create_identity(tmp_path)
    with pytest.raises(IdentityError, match="already exists"):
        create_identity(tmp_path)
    assert load_identity(tmp_path).node_id == first.node_id


def test_new_or_empty_data_dir_gets_an_identity(tmp_path: Path) -> None:
    fresh = load_or_create_identity(tmp_path / "new")
    assert load_or_create_identity(tmp_path / "new").node_id == fresh.node_id
    (tmp_path / "empty").mkdir()
    assert load_or_create_identity(tmp_path / "empty").node_id != fresh.node_id


def test_data_dir_defaults_to_p2psched_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("P2PSCHED_HOME", str(tmp_path / "h"))
    assert default_data_dir() == tmp_path / "h"
    monkeypatch.delenv("P2PSCHED_HOME")
    assert default_data_dir() == Path.home() / ".p2psched"


def test_x25519_key_matches_the_identity_on_both_sides() -> None:
    """The pair key rests on this: my X25519 secret with your mapped public key equals yours
    with mine."""
    for _ in range(10):
        a, b = Identity.generate(), Identity.generate()
        xa = X25519PrivateKey.from_private_bytes(a.x25519_private_bytes())
        xb = X25519PrivateKey.from_private_bytes(b.x25519_private_bytes())
        raw = xa.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert raw == x25519_public_of(a.public_key)
        ab = xa.exchange(X25519PublicKey.from_public_bytes(x25519_public_of(b.public_key)))
        ba = xb.exchange(X25519PublicKey.from_public_bytes(x25519_public_of(a.public_key)))
        assert ab == ba


def test_x25519_map_refuses_unusable_keys() -> None:
    with pytest.raises(ValueError):
        x25519_public_of(b"\x01" + bytes(31))  # y = 1: the neutral point
    with pytest.raises(ValueError):
        x25519_public_of(b"\xff" * 32)  # y >= p
    with pytest.raises(ValueError):
        x25519_public_of(b"short")
    assert node_id_of(b"x" * 32) == hashlib.sha256(b"x" * 32).digest()
