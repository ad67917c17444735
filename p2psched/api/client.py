"""The CLI's side of the control API: find the node running on a data dir and call it.

Plain HTTP/1.1 on one kept-alive connection, from the standard library: the API listens on
loopback, and a status command should not pay a tenth of a second to import an HTTP stack.
Promises: `ControlClient.find` answers None when no node runs there (no endpoint file, or it
does not answer), never a stale one; a refused call raises `ApiCallError` with the node's own
message; a node that cannot be reached, or stops answering, raises `NodeUnreachable`.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from p2psched.api.endpoint import ENDPOINT_FILE, TOKEN_FILE

MAX_ANSWER_BYTES = 64 << 20  # more than any answer of the API; a bound all the same
# The node's server closes a connection idle for 5 s; one idle for less may still be closing
# as we send on it, which a GET survives by asking once more on a new connection.
IDLE_S = 2.0


class ApiCallError(Exception):
    """The node refused a call; the message is its reason."""


class NodeUnreachable(OSError):
    """The node's API could not be reached, or broke off an answer."""


class ControlClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"not a control API address: {url!r}")
        self.url = url
        self._prefix = parts.path.rstrip("/")
        self._headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
        self._http = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        self._used_at = -float("inf")  # when the connection last carried an answer

    @classmethod
    def find(cls, data_dir: Path) -> ControlClient | None:
        try:
            info = json.loads((data_dir / ENDPOINT_FILE).read_text())
            token = (data_dir / TOKEN_FILE).read_text().strip()
            client = cls(str(info["url"]), token)
        except (OSError, ValueError, KeyError, TypeError):
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
            response, data = self._exchange(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not (reused and method == "GET"):
                raise NodeUnreachable(f"{self.url}: the node closed the connection") from None
            response, data = self._exchange(method, path, body, headers)
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
