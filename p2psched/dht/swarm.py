"""A swarm of real DHT nodes on UDP in one trio run, for tests, the benchmark and the demo.

Promises: every node has its own identity and socket on `host`; all join through the first one
(star bootstrap); any node can be killed on its own (its socket closes, nothing is sent for it);
leaving the `open_swarm` block stops them all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from p2psched.dht.node import DhtNode, open_dht_node
from p2psched.dht.protocol import DhtConfig
from p2psched.identity import Identity


@dataclass(slots=True)
class SwarmMember:
    node: DhtNode
    scope: trio.CancelScope

    @property
    def alive(self) -> bool:
        return not self.scope.cancel_called

    def kill(self) -> None:
        self.scope.cancel()


async def _run_member(
    config: DhtConfig | None,
    host: str,
    *,
    task_status: trio.TaskStatus[SwarmMember] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.CancelScope() as scope:
        async with open_dht_node(Identity.generate(), host=host, config=config) as node:
            task_status.started(SwarmMember(node, scope))
            await trio.sleep_forever()


@asynccontextmanager
async def open_swarm(
    n: int,
    *,
    config: DhtConfig | None = None,
    host: str = "127.0.0.1",
    joining_at_once: int = 16,
) -> AsyncIterator[list[SwarmMember]]:
    """`n` running, joined nodes; `joining_at_once` of them bootstrap concurrently."""
    async with trio.open_nursery() as nursery:
        members = [await nursery.start(_run_member, config, host) for _ in range(n)]
        seed = members[0].node.address
        limiter = trio.CapacityLimiter(joining_at_once)

        async def join(member: SwarmMember) -> None:
            async with limiter:
                await member.node.bootstrap([seed])

        async with trio.open_nursery() as joining:
            for member in members[1:]:
                joining.start_soon(join, member)
        try:
            yield members
        finally:
            nursery.cancel_scope.cancel()
