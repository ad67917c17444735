"""The node as one process composes it: a worker whose TCP port is taken listens on
another; a worker's config sets the terms its core serves on; its scheduler's records of
workers outlive a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from p2psched.identity import Identity
from p2psched.node.node import open_node
from p2psched.scheduler.job import parse_job
from p2psched.scheduler.worker_views import ReputationRules
from p2psched.worker.config import load_config
from tests.harness.network import ECHO, MACHINE, network


async def test_a_worker_whose_tcp_port_is_taken_listens_on_another(tmp_path: Path) -> None:
    blocker = trio.socket.socket()
    await blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]  # taken on TCP; free on UDP for the DHT
    async with open_node(
        Identity.generate(),
        tmp_path / "w",
        port=port,
        worker=ECHO,
        detected=MACHINE,
        reachability="public",
    ) as node:
        assert node.dht.address[1] == port
        assert node.worker is not None and not node.worker.address.endswith(f":{port}")
    blocker.close()


async def test_the_grace_a_worker_gives_a_gone_scheduler_is_its_configs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """[worker] scheduler_grace_s, read from the file: a scheduler that goes away with a task
    running finds it stopped that long after, and the slot free for others."""
    config = tmp_path / "worker.toml"
    config.write_text('[worker]\ndrivers = ["sleep"]\nslots = 1\nscheduler_grace_s = 5\n')
    spec = {
        "name": "nap",
        "driver": "sleep",
        "timeout": 600,
        "tasks": [{"input": {"seconds": 500}}],
    }
    async with network(tmp_path, [load_config(config)]) as (_, [worker]):
        assert worker.worker is not None
        manager = worker.worker.service.manager
        async with open_node(
            Identity.generate(), tmp_path / "s2", seeds=[worker.dht.address], dht_client=True
        ) as scheduler:
            job = scheduler.jobs.submit(parse_job(spec))
            with trio.fail_after(60):
                while manager.running == 0:
                    await trio.sleep(0.1)
        gone = trio.current_time()  # its channels closed as it left
        assert not job.done.is_set() and manager.running == 1
        await trio.sleep_until(gone + 4)
        assert manager.running == 1  # within the grace: it may come back
        await trio.sleep_until(gone + 6)
        assert manager.running == 0 and manager.free_slots == 1


async def test_a_jobs_wait_for_worker_is_how_long_its_tasks_wait_for_one(tmp_path: Path) -> None:
    """`wait_for_worker` in the job file: a task no worker can take fails after that long, not
    after the default 30 s, and says why."""
    async with network(tmp_path, [ECHO]) as (scheduler, _):
        doc = {
            "name": "nobody",
            "driver": "echo",
            "resources": {"gpu": "H100"},
            "wait_for_worker": "1s",
            "tasks": [{"input": {"a": 1}}],
        }
        job = scheduler.jobs.submit(parse_job(doc))
        assert job.run.config.no_worker_s == 1.0
        with trio.fail_after(25):  # (the default would take 30 s: a bound, not a measure)
            await job.done.wait()
    (task,) = job.run.tasks.values()
    assert task.state.value == "failed" and "no worker" in (task.error or ""), task.error


async def test_a_node_remembers_the_workers_records_its_scheduler_kept_across_a_restart(
    tmp_path: Path,
) -> None:
    me, liar, honest = Identity.generate(), b"\x11" * 32, b"\x22" * 32
    rules = ReputationRules(max_disputes=1, skip_s=3600.0)
    async with open_node(me, tmp_path / "n", reputation=rules) as node:
        dispatcher = node.jobs.dispatcher
        now = node.dht.now()
        dispatcher.views.disputed(liar, "t1", "result differs from the canonical one", now=now)
        dispatcher.record([])  # as each step of a job's is written: the change goes with it
        assert [r.worker for r in node.store.reputations(10)] == [liar]
        dispatcher.views.challenged(honest, True, None, now=now)  # written as the node stops
    async with open_node(me, tmp_path / "n", reputation=rules) as again:
        views, now = again.jobs.dispatcher.views, again.dht.now()
        assert views.disputes(liar) == 1 and views.skipped(liar, now)
        assert "t1 was disputed" in (views.barred(liar, now) or "")
        assert views.capacity(honest) == "passed" and not views.skipped(honest, now)


async def test_a_node_starts_with_a_damaged_reputation_row_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    # A row no node writes (a value of another type: edited by hand, or damaged) was taken
    # back as it was: a text among the times made sorting them fail, and the node with it.
    me, liar = Identity.generate(), b"\x11" * 32
    async with open_node(me, tmp_path / "n") as node:
        node.jobs.dispatcher.views.disputed(liar, "t1", "differs", now=node.dht.now())
        node.jobs.dispatcher.record([])
        path = node.store.path
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for worker, updated_at, skip_until in ((b"\x22" * 32, "x", None), (b"\x33" * 32, 1.0, "y")):
            db.execute(
                "INSERT INTO reputation VALUES (?, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'unknown', 0, 0, ?, "
                "NULL, ?)",
                (worker, skip_until, updated_at),
            )
    finally:
        db.close()
    async with open_node(me, tmp_path / "n") as again:
        views, now = again.jobs.dispatcher.views, again.dht.now()
        assert views.skipped(liar, now) and views.workers() == [liar]
