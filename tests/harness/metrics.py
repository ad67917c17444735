"""A client of a node's control API in this process, for scraping `/metrics` and
calling its routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import trio

from p2psched.api.control import api_token, serve_api
from p2psched.node.node import Node


@asynccontextmanager
async def scraper(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `node`'s control API, sending its token."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_api, node))
        headers = {"authorization": f"Bearer {api_token(node.data_dir)}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            yield http
        nursery.cancel_scope.cancel()
