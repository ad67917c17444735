"""Where a running node's control API is found: the two files it keeps in its data dir.

Apart from the API itself so that a client finds a node without importing the server: FastAPI,
Hypercorn and the node cost a command most of a second to import.
"""

from __future__ import annotations

TOKEN_FILE = "api.token"  # the bearer token, readable by the owner only
ENDPOINT_FILE = "api.json"  # the URL and pid, there while the node runs
