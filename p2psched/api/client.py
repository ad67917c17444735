"""The CLI's side of the control API: find the node running on a data dir and call it.

Plain HTTP/1.1 on one kept-alive connection, from the standard library: a status command should
not pay a tenth of a second to import an HTTP stack. `find` speaks over the node's Unix socket
in its data dir, never over TCP, whose port a dead node's `api.json` may still name.
Promises: the token goes only to a Unix socket whose server runs as this user, never over TCP
(plain or TLS): there each new connection opens a signed session, whose server must prove it
holds the token, and each request carries a MAC instead (`endpoint.py`), so a listener relaying
the bytes can neither learn the token nor make or replay a request of its own;
`ControlClient.find` answers None when no node runs there (no endpoint file, or it does not
answer), never a stale one; a refused call raises `ApiCallError` with the node's own message; a
node that cannot be reached, or stops answering, or fails its proof raises `NodeUnreachable`.
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import secrets
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from p2psched.api.endpoint import (
    ENDPOINT_FILE,
    NONCE_BYTES,
    SESSION_GONE_HEADER,
    SESSION_PATH,
    SOCKET_FILE,
    TOKEN_FILE,
    request_mac,
    server_proof,
    session_gone_proof,
    session_key,
    signed_authorization,
    socket_path,
)

MAX_ANSWER_BYTES = 64 << 20  # more than any answer of the API; a bound all the same
# The node's server closes a connection idle for 5 s; one idle for less may still be closing
# as we send on it, which a GET survives by asking once more on a new connection.
IDLE_S = 2.0


class ApiCallError(Exception):
    """The node refused a call; the message is its reason."""


class NodeUnreachable(OSError):
    """The node's API could not be reached, or broke off an answer."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a data dir's `api.sock`, to a server that runs as this user."""

    def __init__(self, data_dir: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.data_dir = data_dir

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            with socket_path(self.data_dir) as path:
                sock.connect(path)
            _, uid, _ = struct.unpack(
                "iII",
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII")),
            )
            if uid != os.geteuid():  # (a socket another user could plant in a loose directory)
                raise NodeUnreachable(
                    f"{self.data_dir / SOCKET_FILE} is served by uid {uid}, not by this user"
                )
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """A node's API at `url` (http, or https verified against `cafile`, else the system's
    authorities), or, with `data_dir`, on that data dir's Unix socket."""

    def __init__(
        self,
        url: str,
        token: str,
        timeout: float = 30.0,
        *,
        data_dir: Path | None = None,
        cafile: Path | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname is None:
            raise ValueError(f"not a control API address: {url!r}")
        self.url = url
        self._token = token
        self._prefix = parts.path.rstrip("/")
        self._headers = {"accept": "application/json"}
        self._http: http.client.HTTPConnection
        if data_dir is not None:
            self._headers["authorization"] = f"Bearer {token}"  # (to this user's server only)
            self._http = _UnixConnection(data_dir, timeout)
        elif parts.scheme == "https":
            context = ssl.create_default_context(cafile=cafile)
            self._http = http.client.HTTPSConnection(
                parts.hostname, parts.port or 443, timeout=timeout, context=context
            )
        else:
            self._http = http.client.HTTPConnection(
                parts.hostname, parts.port or 80, timeout=timeout
            )
        self._signing = data_dir is None  # over TCP a request is signed, never the token sent
        self._session: tuple[str, bytes] = ("", b"")  # the connection's session: id and key
        self._counter = 0  # the last request's of the session
        self._used_at = -float("inf")  # when the connection last carried an answer

    @classmethod
    def find(cls, data_dir: Path) -> ControlClient | None:
        try:
            info = json.loads((data_dir / ENDPOINT_FILE).read_text())
            token = (data_dir / TOKEN_FILE).read_text().strip()
            # An older node has no socket: its TCP port then, which must prove itself first.
            local = data_dir if info.get("socket") == SOCKET_FILE else None
            client = cls(str(info["url"]), token, data_dir=local)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        try:
            client.get("/v1/node")
        except (NodeUnreachable, ApiCallError):
            client.close()
            return None
        return client

    def get(self, path: str, **params: Any) -> Any:
        query = urlencode({k: _text(v) for k, v in params.items() if v is not None})
        return self._call("GET", f"{path}?{query}" if query else path, None)

    def get_bytes(self, path: str) -> bytes:
        """The body of an answer that is not JSON (a task's output, in MessagePack)."""
        return self._call("GET", path, None, raw=True)  # type: ignore[no-any-return]

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, json.dumps(body).encode())

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path, None)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: bytes | None, *, raw: bool = False) -> Any:
        headers = dict(self._headers)
        if body is not None:
            headers["content-type"] = "application/json"
        if time.monotonic() - self._used_at > IDLE_S:
            self._http.close()  # the server may have closed it: a new one (costs no round trip)
        reused = self._http.sock is not None
        try:
            response, data = self._proven_exchange(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not (reused and method == "GET"):
                raise NodeUnreachable(f"{self.url}: the node closed the connection") from None
            response, data = self._proven_exchange(method, path, body, headers)
        if raw and response.status < 400:
            return data
        try:
            answer = json.loads(data)
        except ValueError:
            answer = {"message": data[:200].decode(errors="replace")}
        if response.status >= 400:
            message = answer.get("message") if isinstance(answer, dict) else None
            raise ApiCallError(message or f"HTTP {response.status}")
        return answer

    def _proven_exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """`_exchange`, signed over TCP in the connection's session (opened first on a new
        connection); a session the server no longer holds (it forgot it, idle or crowded out)
        is opened anew once, if the node proves the refusal its own: such a request reached no
        handler, so even a POST goes again, while a relay's forged 401 cannot have it run twice."""
        if not self._signing:
            return self._exchange(method, path, body, headers)
        fresh = self._http.sock is None
        if fresh:
            self._open_session()
        signed = self._signed(method, path, body, headers)
        response, data = self._exchange(method, path, body, signed)
        if response.status != 401 or fresh or not self._session_gone(response, signed):
            return response, data
        self._open_session()
        return self._exchange(method, path, body, self._signed(method, path, body, headers))

    def _open_session(self) -> None:
        """Open a connection and a session on it, whose server proves it holds the token (the
        token itself never crosses); the requests that follow go on the same connection."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        response, data = self._exchange("GET", f"{SESSION_PATH}?nonce={nonce.hex()}", None, {})
        try:
            answer = json.loads(data)
            session, given = answer["session"], answer["proof"]
            key = session_key(self._token, nonce, bytes.fromhex(session))
        except (ValueError, KeyError, TypeError, AttributeError):
            session, given, key = "", None, b""
        if (
            response.status != 200
            or not isinstance(given, str)
            or not hmac.compare_digest(given, server_proof(key))
            or self._http.sock is None
        ):
            self._http.close()
            raise NodeUnreachable(
                f"{self.url} did not prove it holds this node's token (HTTP {response.status}): "
                "not the node, or another; nothing was asked of it"
            )
        self._session, self._counter = (session, key), 0

    def _session_gone(self, response: http.client.HTTPResponse, signed: dict[str, str]) -> bool:
        """Whether the node itself refused the request signed in `signed` for its session."""
        given = response.getheader(SESSION_GONE_HEADER) or ""
        expected = session_gone_proof(self._token, signed["authorization"])
        return hmac.compare_digest(given.encode(), expected.encode())

    def _signed(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> dict[str, str]:
        """`headers` with the next request's signature in the connection's session."""
        self._counter += 1
        session, key = self._session
        target = (self._prefix + path).encode()
        mac = request_mac(key, self._counter, method, target, body or b"")
        return {**headers, "authorization": signed_authorization(session, self._counter, mac)}

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its answer; a connection the server closed first raises as such
        (the caller may ask again), any other failure as `NodeUnreachable`."""
        try:
            self._http.request(method, self._prefix + path, body=body, headers=headers)
            response = self._http.getresponse()
            data = response.read(MAX_ANSWER_BYTES + 1)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._http.close()
            raise
        except (OSError, http.client.HTTPException) as e:
            self._http.close()  # the next call opens a new connection
            raise NodeUnreachable(f"{self.url}: {e or type(e).__name__}") from None
        if len(data) > MAX_ANSWER_BYTES or response.will_close:
            self._http.close()
        self._used_at = time.monotonic()
        return response, data


def _text(value: Any) -> str:
    """A query parameter as the API reads it (booleans as JSON's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
