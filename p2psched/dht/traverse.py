"""Drives a pure `Lookup` with any async network call: the real UDP node, or an in-memory graph.

Promises: at most `lookup.alpha` calls run at once; when the lookup is finished the calls still
running are cancelled, so one slow or dead peer never holds up a finished lookup.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from p2psched.dht.lookup import Answer, Lookup, Query

Call = Callable[[Query], Awaitable[Answer | None]]
L = TypeVar("L", bound=Lookup)


async def run_lookup(lookup: L, call: Call) -> L:
    send, receive = trio.open_memory_channel[tuple[Query, Answer | None]](math.inf)

    async def ask(query: Query) -> None:
        send.send_nowait((query, await call(query)))

    async with trio.open_nursery() as nursery:
        for query in lookup.next_queries():
            nursery.start_soon(ask, query)
        while lookup.inflight and not lookup.finished:
            query, answer = await receive.receive()
            lookup.on_answer(query, answer)
            for query in lookup.next_queries():
                nursery.start_soon(ask, query)
        nursery.cancel_scope.cancel()
    return lookup
