"""The CLI's side of the control API: find the node running on a data dir and call it.

Promises: `ControlClient.find` answers None when no node runs there (no endpoint file, or it
does not answer), never a stale one; a refused call raises `ApiCallError` with the node's own
message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from p2psched.api.endpoint import ENDPOINT_FILE, TOKEN_FILE


class ApiCallError(Exception):
    """The node refused a call; the message is its reason."""


class ControlClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=timeout
        )

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
        except (httpx.HTTPError, ApiCallError):
            client.close()
            return None
        return client

    def get(self, path: str, **params: Any) -> Any:
        return self._answer(self._http.get(path, params=params))

    def post(self, path: str, body: Any) -> Any:
        return self._answer(self._http.post(path, json=body))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
        if response.status_code >= 400:
            message = body.get("message") if isinstance(body, dict) else None
            raise ApiCallError(message or f"HTTP {response.status_code}")
        return body
