"""The node's local control API (HTTP/JSON with OpenAPI) and its client."""

from __future__ import annotations
