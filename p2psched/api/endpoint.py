"""Where a running node's control API is found, and how a client knows it found the node:
the files it keeps in its data dir, and the proof a server gives that it holds the token.

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
# Answers HMAC(token, nonce) to anyone: what a client asks of a TCP server before it sends the
# token there, since a port a dead node named may now be anyone's.
PROOF_PATH = "/v1/proof"
NONCE_BYTES = 32
_PROOF_CONTEXT = b"p2psched control API proof v1\x00"
# sun_path holds 108 bytes; a longer socket path is reached through the directory's descriptor.
_SUN_PATH_MAX = 107


@dataclass(frozen=True)
class ApiTls:
    """The certificate (PEM, its chain after it) and private key the TCP API serves TLS with."""

    cert: Path
    key: Path


def proof(token: str, nonce: str) -> str:
    """What a server holding `token` answers to `nonce` (hex); bound to this use alone."""
    return hmac.new(token.encode(), _PROOF_CONTEXT + nonce.encode(), hashlib.sha256).hexdigest()


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
