"""Networks of real nodes in this process, on loopback: workers and a scheduler found
through the DHT (`network`), the same with private workers reached through gates
(`relayed_network`), a bare gate (`gate_at`), and the jobs they run (`echo_job`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from p2psched.gate.service import Gate
from p2psched.identity import Identity
from p2psched.node.node import Node, open_node
from p2psched.resources.detect import Detected
from p2psched.worker.config import WorkerConfig

MACHINE = Detected("Test CPU", 4, 8.0, 100.0, (), 0.0, 0.0)
ECHO = WorkerConfig(slots=2, drivers=("echo", "sleep"))


@asynccontextmanager
async def network(
    tmp_path: Path, configs: list[WorkerConfig], **worker: Any
) -> AsyncIterator[tuple[Node, list[Node]]]:
    """A seed node, a worker per config in `configs` (on a `MACHINE`, unless `worker` gives
    another `detected`, or other settings of `open_node`) and a client scheduler, on
    loopback, found through the DHT; yields (scheduler, workers)."""
    async with AsyncExitStack() as stack:
        gate = await stack.enter_async_context(open_node(Identity.generate(), tmp_path / "gate"))
        seeds = [gate.dht.address]
        workers = [
            await stack.enter_async_context(
                open_node(
                    Identity.generate(),
                    tmp_path / f"w{i}",
                    seeds=seeds,
                    worker=config,
                    **({"detected": MACHINE} | worker),
                )
            )
            for i, config in enumerate(configs)
        ]
        scheduler = await stack.enter_async_context(
            open_node(Identity.generate(), tmp_path / "s", seeds=seeds, dht_client=True)
        )
        yield scheduler, workers


def echo_job(n: int, **extra: Any) -> dict[str, Any]:
    """A job of `n` echo tasks, task i handing back {"n": i}; `extra` adds fields."""
    return {
        "name": "e2e",
        "driver": "echo",
        "template": {"input": {"n": "{n}"}},
        "matrix": {"n": list(range(n))},
        **extra,
    }


@asynccontextmanager
async def gate_at(gate: Gate | None = None) -> AsyncIterator[tuple[Gate, tuple[str, int]]]:
    """`gate` (by default one with the default limits) serving on loopback, stopped on
    leaving."""
    gate = gate or Gate(Identity.generate())
    async with trio.open_nursery() as nursery:
        yield gate, await nursery.start(gate.serve)
        nursery.cancel_scope.cancel()


async def private_workers(
    stack: AsyncExitStack, tmp_path: Path, seeds: list[tuple[str, int]], n: int
) -> list[Node]:
    """`n` workers that listen nowhere: they take channels only through their gates."""
    return [
        await stack.enter_async_context(
            open_node(
                Identity.generate(),
                tmp_path / f"w{i}",
                seeds=seeds,
                worker=ECHO,
                detected=MACHINE,
                reachability="private",
                ad_ttl=20.0,
            )
        )
        for i in range(n)
    ]


@asynccontextmanager
async def relayed_network(
    tmp_path: Path, workers: int, gates: int = 1, **gate_kw: object
) -> AsyncIterator[tuple[Node, list[Node], list[Node]]]:
    """Gates, private workers (they listen nowhere) and a scheduler, on loopback."""
    async with AsyncExitStack() as stack:
        gate_nodes: list[Node] = []
        for i in range(gates):
            seeds = [g.dht.address for g in gate_nodes]
            gate_nodes.append(
                await stack.enter_async_context(
                    open_node(
                        Identity.generate(), tmp_path / f"g{i}", seeds=seeds, gate=True, **gate_kw
                    )  # type: ignore[arg-type]
                )
            )
        seeds = [g.dht.address for g in gate_nodes]
        worker_nodes = await private_workers(stack, tmp_path, seeds, workers)
        scheduler = await stack.enter_async_context(
            open_node(Identity.generate(), tmp_path / "s", seeds=seeds, dht_client=True)
        )
        yield scheduler, worker_nodes, gate_nodes
