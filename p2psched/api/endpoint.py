"""Where a running node's control API is found, and how a client and the node prove to each other
over TCP that both hold the token without either sending it: the files a node keeps in its data
dir, the session key both derive from two nonces, and the MAC that signs each request.

Apart from the API itself so that a client finds a node without importing the server: FastAPI,
Hypercorn and the node cost a command most of a second to import.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE = "api.token"  # the bearer token, readable by the owner only
ENDPOINT_FILE = "api.json"  # the URL and pid, there while the node runs
SOCKET_FILE = "api.sock"  # the API on a Unix socket, which the CLI uses: the owner's only
# A TCP client opens a session: it sends a fresh nonce, the server answers one of its own and
# proves it derived the session key from both and the token; every request then carries
# `authorization: p2psched-mac session=<server nonce>, counter=<n>, mac=<hex>`, a MAC under that
# key over the counter, method, target and body's hash. The token never crosses TCP, so a
# listener relaying the bytes learns nothing it can sign another request with.
SESSION_PATH = "/v1/session"
NONCE_BYTES = 32
MAC_SCHEME = "p2psched-mac"
_SESSION_CONTEXT = b"p2psched control API session\x00"
_SERVER_CONTEXT = b"p2psched control API server\x00"
_REQUEST_CONTEXT = b"p2psched control API request\x00"
_GONE_CONTEXT = b"p2psched control API session gone\x00"
# On a 401 for a session it no longer holds, the node's proof that it refused that very request
# (`session_gone_proof`): only then may a client sign it again, in a new session.
SESSION_GONE_HEADER = "p2psched-session-gone"
# sun_path holds 108 bytes; a longer socket path is reached through the directory's descriptor.
_SUN_PATH_MAX = 107


@dataclass(frozen=True)
class ApiTls:
    """The certificate (PEM, its chain after it) and private key the TCP API serves TLS with."""

    cert: Path
    key: Path


def session_key(token: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The key a session's requests are signed with: only a holder of `token` derives it."""
    material = _SESSION_CONTEXT + client_nonce + server_nonce
    return hmac.new(token.encode(), material, hashlib.sha256).digest()


def server_proof(key: bytes) -> str:
    """What the server answers a session's opening with, to show it derived `key` (hex)."""
    return hmac.new(key, _SERVER_CONTEXT, hashlib.sha256).hexdigest()


def request_mac(key: bytes, counter: int, method: str, target: bytes, body: bytes) -> str:
    """The MAC of one request of a session (hex): `target` is the path and query as sent, so
    neither the request's method, its target, its body nor its place in the session can
    change without the MAC."""
    signed = b"\n".join(
        (
            _REQUEST_CONTEXT + counter.to_bytes(8, "big"),
            method.upper().encode(),
            target,
            hashlib.sha256(body).digest(),
        )
    )
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def session_gone_proof(token: str, authorization: str) -> str:
    """What the node answers a signed request whose session it no longer holds, bound to that
    request's `authorization` header (hex): a relay cannot forge it, so it cannot make a client
    that ran a request through it sign the request again and the node run it twice."""
    material = _GONE_CONTEXT + authorization.encode()
    return hmac.new(token.encode(), material, hashlib.sha256).hexdigest()


def signed_authorization(session: str, counter: int, mac: str) -> str:
    """The `authorization` header of a signed request."""
    return f"{MAC_SCHEME} session={session}, counter={counter}, mac={mac}"


@contextmanager
def socket_path(data_dir: Path) -> Iterator[str]:
    """A path by which this process reaches `<data_dir>/api.sock`, however long the real one."""
    path = data_dir / SOCKET_FILE
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(data_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_FILE}"
    finally:
        os.close(fd)
