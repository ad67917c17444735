"""Who may use the design documents' paths without the token (`open_to_loopback`), clause by
clause: what a real client can send is tested over HTTP in test_design_api.py; a peer that is
not loopback cannot be made there (its traffic stays on loopback), so the scope is built here."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

import pytest

from p2psched.api import scheduler_api
from p2psched.api.local_peer import owner_of


def scope(
    path: str = "/queue/submit",
    peer: tuple[str, int] | None = ("127.0.0.1", 50000),
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    given = [(b"host", b"127.0.0.1:8000")] if headers is None else headers
    server = ("127.0.0.1", 8000)
    return {"type": "http", "path": path, "client": peer, "server": server, "headers": given}


def mine(peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    """A peer whose socket is this user's (what `owner_of` says of a real one)."""
    return os.getuid()


def open_to_loopback(request: dict[str, Any], owner: Any = mine) -> bool:
    return scheduler_api.open_to_loopback(request, owner)


@pytest.mark.parametrize("peer", [("127.0.0.1", 1), ("127.1.2.3", 1), ("::1", 1)])
def test_a_loopback_peer_naming_loopback_gets_in(peer: tuple[str, int]) -> None:
    assert open_to_loopback(scope(peer=peer))
    assert open_to_loopback(scope(peer=("::ffff:127.0.0.1", 1)))
    for host in (b"localhost", b"[::1]:9", b"127.0.0.1"):
        assert open_to_loopback(scope(headers=[(b"host", host)]))


@pytest.mark.parametrize(
    "refused",
    [
        scope(path="/v1/jobs"),  # not one of the document's paths
        scope(peer=("192.0.2.7", 50000)),  # another machine
        scope(peer=("::ffff:192.0.2.7", 50000)),
        scope(peer=None),  # no TCP peer (the Unix socket)
        scope(peer=("/run/x.sock", 0)),
        scope(headers=[(b"host", b"evil.example")]),  # a rebound name
        scope(headers=[(b"host", b"127.0.0.1.evil.example")]),
        scope(headers=[(b"host", b"localhost:8000"), (b"host", b"evil.example")]),
        scope(headers=[]),
        scope(headers=[(b"host", b"localhost"), (b"origin", b"http://localhost:3000")]),
    ],
)
def test_anything_else_needs_the_token(refused: dict[str, Any]) -> None:
    assert not open_to_loopback(refused)


def test_a_loopback_peer_of_another_user_needs_the_token() -> None:
    """Every user of the host reaches loopback: only a peer whose socket is this node's own
    user's (or root's) goes without the token."""
    assert not open_to_loopback(scope(), owner=lambda peer, ours: os.getuid() + 1000)
    assert not open_to_loopback(scope(), owner=lambda peer, ours: None)  # not known
    assert not open_to_loopback({**scope(), "server": None})


def test_the_owner_of_a_loopback_socket_is_the_user_that_opened_it() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as _:
            accepted, peer = server.accept()
            with accepted:
                assert owner_of(peer, accepted.getsockname()) == os.getuid()
        assert owner_of(("127.0.0.1", 1), server.getsockname()) is None


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to open a socket as another user")
def test_a_socket_another_user_opened_is_told_as_theirs() -> None:
    nobody = 65534
    # bash's /dev/tcp: a client any user can run (this venv may be in a home only root reads)
    client = "exec 3<>/dev/tcp/127.0.0.1/$0; sleep 30"
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(20)
        port = str(server.getsockname()[1])
        with subprocess.Popen(["bash", "-c", client, port], user=nobody, cwd="/") as other:
            try:
                accepted, peer = server.accept()
                with accepted:
                    assert owner_of(peer, accepted.getsockname()) == nobody
                    request = {**scope(peer=peer), "server": accepted.getsockname()}
                    assert not scheduler_api.open_to_loopback(request)  # the real owner_of
            finally:
                other.kill()
