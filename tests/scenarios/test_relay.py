"""Workers behind gates in one process, over real loopback sockets: workers that accept no
inbound connection take and finish tasks through a gate; one that can be dialed back stays
direct; a worker whose gate dies moves to another and its tasks still finish; one no gate
will relay for is told why."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from p2psched.gate.relay import RelayLimits
from p2psched.identity import Identity
from p2psched.node.node import JoinError, Node, open_node
from p2psched.scheduler.job import parse_job
from p2psched.wire.address import parse_relay_address, relay_address
from tests.harness.network import ECHO, MACHINE, echo_job, private_workers, relayed_network


async def test_workers_that_accept_no_connection_complete_tasks_through_a_gate(
    tmp_path: Path,
) -> None:
    async with relayed_network(tmp_path, workers=2) as (scheduler, workers, (gate,)):
        for w in workers:
            assert w.worker is not None and w.worker.reachability == "private"
            assert w.worker.service._nursery is not None
            assert w.worker.address == relay_address(
                f"{gate.dht.address[0]}:{gate.dht.address[1]}", w.node_id
            )
            assert w.worker.advert.profile.addresses == (w.worker.address,)
            assert w.dht.protocol.config.client  # out of others' routing tables
        job = scheduler.jobs.submit(parse_job(echo_job(40)))
        with trio.fail_after(60):
            await job.done.wait()
        assert job.run.counts() == {"completed": 40}
        assert all(t.output == {"n": t.spec.index} for t in job.run.tasks.values())
        assert {t.worker for t in job.run.tasks.values()} == {w.node_id for w in workers}
        assert gate.gate is not None
        counters = gate.gate.status()["counters"]
        assert counters["circuits_opened"] == 2  # one per worker, carrying every task
        assert counters["bytes_relayed"] > 0
        assert len(gate.gate.status()["reservations"]) == 2


async def test_a_worker_that_can_be_dialed_back_stays_direct(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        gate = await stack.enter_async_context(
            open_node(Identity.generate(), tmp_path / "g", gate=True)
        )
        worker = await stack.enter_async_context(
            open_node(
                Identity.generate(),
                tmp_path / "w",
                seeds=[gate.dht.address],
                worker=ECHO,
                detected=MACHINE,
            )
        )
        assert worker.worker is not None and worker.worker.reachability == "public"
        assert "dialed it back" in worker.worker.why
        assert parse_relay_address(worker.worker.address) is None
        assert not worker.dht.protocol.config.client
        assert gate.gate is not None and gate.gate.status()["reservations"] == []


async def test_when_its_gate_dies_a_worker_moves_to_another_and_running_tasks_finish(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:

        async def run_gate(name: str, seeds: list[tuple[str, int]], task_status: Any) -> None:
            async with open_node(Identity.generate(), tmp_path / name, seeds=seeds, gate=True) as g:
                task_status.started(g)
                await trio.sleep_forever()

        first_scope = trio.CancelScope()

        async def first_gate(task_status: Any) -> None:
            with first_scope:
                await run_gate("g0", [], task_status)

        g0: Node = await nursery.start(first_gate)
        g1: Node = await nursery.start(run_gate, "g1", [g0.dht.address])
        seeds = [g0.dht.address, g1.dht.address]
        async with AsyncExitStack() as stack:
            workers = await private_workers(stack, tmp_path, seeds, 2)
            scheduler = await stack.enter_async_context(
                open_node(Identity.generate(), tmp_path / "s", seeds=seeds)
            )
            for w in workers:
                first = relay_address(f"127.0.0.1:{g0.dht.address[1]}", w.node_id)
                assert w.worker is not None and w.worker.address == first
            naps = {"name": "naps", "driver": "sleep", "tasks": [{"input": {"seconds": 3}}] * 4}
            job = scheduler.jobs.submit(parse_job(naps))
            with trio.fail_after(30):
                while job.run.counts().get("running", 0) < 4:  # one per slot, all started
                    await trio.sleep(0.05)
            first_scope.cancel()  # the first gate dies, with every circuit through it
            with trio.fail_after(60):
                await job.done.wait()
            tasks = list(job.run.tasks.values())
            assert job.run.counts() == {"completed": 4}, [t.error for t in tasks]
            assert all(t.attempts == 0 for t in tasks)  # none was run again elsewhere
            assert sum(w.worker.service.completed for w in workers if w.worker) == 4
            for w in workers:  # each moved to the second gate, and said so in its ad
                assert w.worker is not None and w.worker.relay is not None
                assert w.worker.relay.moves == 1
                moved = relay_address(f"127.0.0.1:{g1.dht.address[1]}", w.node_id)
                assert w.worker.advert.profile.addresses == (moved,)
            assert g1.gate is not None
            assert g1.gate.status()["counters"]["circuits_opened"] == 2
        nursery.cancel_scope.cancel()


def leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for e in group.exceptions for leaf in leaves(e)]
    return [group]


async def test_a_worker_no_gate_will_relay_for_is_told_why(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        full = await stack.enter_async_context(
            open_node(
                Identity.generate(),
                tmp_path / "g",
                gate=True,
                relay_limits=RelayLimits(reservations=1),
            )
        )
        await private_workers(stack, tmp_path, [full.dht.address], 1)  # takes the one place
        said: list[str] = []
        try:
            async with open_node(
                Identity.generate(),
                tmp_path / "late",
                seeds=[full.dht.address],
                worker=ECHO,
                detected=MACHINE,
                reachability="private",
            ):
                pass
        except* JoinError as group:  # (from inside the node's nurseries)
            said = [str(e) for e in leaves(group)]
        assert len(said) == 1 and "no gate would relay" in said[0], said
        assert "limit of 1 reservations" in said[0]
