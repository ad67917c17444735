"""Who may use the design documents' paths without the token (`open_to_loopback`), clause by
clause: what a real client can send is tested over HTTP in test_design_api.py; a peer that is
not loopback cannot be made there (its traffic stays on loopback), so the scope is built here."""

from __future__ import annotations

from typing import Any

import pytest

from p2psched.api.scheduler_api import open_to_loopback


def scope(
    path: str = "/queue/submit",
    peer: tuple[str, int] | None = ("127.0.0.1", 50000),
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    given = [(b"host", b"127.0.0.1:8000")] if headers is None else headers
    return {"type": "http", "path": path, "client": peer, "headers": given}


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
