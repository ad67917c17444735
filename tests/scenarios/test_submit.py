"""Jobs end to end in one process over real sockets: a gate, workers and a scheduler node on
loopback, found through the DHT, dispatched over Noise channels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched.identity import Identity
from p2psched.scheduler.job import parse_job
from p2psched.wire.deal import result_hash
from p2psched.worker.config import WorkerConfig
from tests.harness.network import echo_job, network


async def test_two_hundred_tasks_over_five_workers(tmp_path: Path) -> None:
    configs = [WorkerConfig(slots=2, drivers=("echo",)) for _ in range(5)]
    async with network(tmp_path, configs) as (scheduler, workers):
        job = scheduler.jobs.submit(parse_job(echo_job(200)))
        with trio.fail_after(60):
            await job.done.wait()
        runs = job.run.tasks.values()
        assert job.run.counts() == {"completed": 200}
        assert sorted(job.settled) == sorted(job.run.tasks)  # each settled exactly once
        keys = {w.node_id: w.identity.public_key for w in workers}
        for t in runs:
            assert t.output == {"n": t.spec.index}
            r = t.receipt
            assert r is not None and r.verify(keys[r.worker])
            assert r.result_hash == result_hash(t.output) and r.task == t.spec.task_id
        assert {t.worker for t in runs} == set(keys)  # the load spread over all five
        done = [w.worker.service.completed for w in workers if w.worker]
        assert sum(done) == 200  # nothing ran twice


async def test_a_worker_without_the_driver_declines_and_others_run_it(tmp_path: Path) -> None:
    configs = [WorkerConfig(drivers=("echo",)), WorkerConfig(drivers=("echo", "sleep"))]
    async with network(tmp_path, configs) as (scheduler, workers):
        spec = {"name": "naps", "driver": "sleep", "tasks": [{"input": {"seconds": 0}}] * 3}
        job = scheduler.jobs.submit(parse_job(spec))
        with trio.fail_after(60):
            await job.done.wait()
        assert job.run.counts() == {"completed": 3}
        # only the worker that enables sleep advertises it, so only it was asked
        assert {t.worker for t in job.run.tasks.values()} == {workers[1].node_id}


async def test_job_nobody_can_run_fails_with_the_reason(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    configs = [WorkerConfig(drivers=("echo",), min_price=5.0)]
    async with network(tmp_path, configs) as (scheduler, _):
        spec = echo_job(2, budget={"max_price_per_task": 1.0})
        job = scheduler.jobs.submit(parse_job(spec))
        with trio.fail_after(300):
            await job.done.wait()
        assert job.run.counts() == {"failed": 2}
        errors = {t.error for t in job.run.tasks.values()}
        assert len(errors) == 1 and "meets" in next(iter(errors))  # max_price<=1 excludes it


async def test_two_jobs_share_one_worker_over_one_channel(tmp_path: Path) -> None:
    async with network(tmp_path, [WorkerConfig(slots=2, drivers=("echo", "sleep"))]) as (s, ws):
        naps = {"name": "naps", "driver": "sleep", "tasks": [{"input": {"seconds": 0.2}}] * 4}
        a = s.jobs.submit(parse_job(naps))
        b = s.jobs.submit(parse_job(echo_job(20)))
        with trio.fail_after(60):
            await a.done.wait()
            await b.done.wait()
        errors = {t.error for t in [*a.run.tasks.values(), *b.run.tasks.values()] if t.error}
        assert a.run.counts() == {"completed": 4} and b.run.counts() == {"completed": 20}, errors
        assert all(t.attempts == 0 for t in [*a.run.tasks.values(), *b.run.tasks.values()])
        assert ws[0].worker is not None and ws[0].worker.service.completed == 24


async def test_a_bug_in_one_job_fails_that_job_not_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2psched.scheduler.run import JobRun

    async with network(tmp_path, [WorkerConfig(drivers=("echo",))]) as (scheduler, _):
        broken = scheduler.jobs.submit(parse_job(echo_job(3)))
        real = JobRun.receive

        def receive(self: JobRun, *args: Any) -> None:
            if self is broken.run:
                raise KeyError("a bug")
            real(self, *args)

        monkeypatch.setattr(JobRun, "receive", receive)
        with trio.fail_after(60):
            await broken.done.wait()
        assert broken.run.counts() == {"failed": 3}
        assert "internal error in the scheduler: KeyError('a bug')" in str(
            next(iter(broken.run.tasks.values())).error
        )
        fine = scheduler.jobs.submit(parse_job(echo_job(3)))
        with trio.fail_after(60):
            await fine.done.wait()
        assert fine.run.counts() == {"completed": 3}


async def test_a_scheduler_that_does_not_read_is_dropped_and_others_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2psched.wire import channel as channels
    from p2psched.wire.deal import Commitment

    monkeypatch.setattr(channels, "OUTBOX_BYTES", 4 << 20)  # so a test fills it quickly
    async with network(tmp_path, [WorkerConfig(drivers=("echo",))]) as (scheduler, workers):
        assert workers[0].worker is not None
        host, port = workers[0].worker.address.rsplit(":", 1)
        rogue = Identity.generate()
        big = "x" * (256 << 10)
        async with channels.open_channel(
            host, int(port), rogue, expected_peer=workers[0].node_id
        ) as channel:
            channel.inbox_bytes = 1 << 20
            with trio.move_on_after(30), pytest.raises(channels.ChannelClosed):
                for rid in range(1, 2000):  # echo tasks with 256 KiB results it never reads
                    task = {
                        "id": f"t{rid}",
                        "driver": "echo",
                        "model": None,
                        "input": big,
                        "timeout": 60.0,
                    }
                    c = Commitment(
                        rogue.node_id, workers[0].node_id, "j", [task["id"]], 0.0, 0.0
                    ).signed(rogue)
                    await channel.send(
                        {"t": "commit", "rid": rid, "commitment": c.to_wire(), "run": [task]}
                    )
            assert rogue.node_id not in workers[0].worker.service._sessions  # dropped
        job = scheduler.jobs.submit(parse_job(echo_job(10)))  # and the worker serves on
        with trio.fail_after(60):
            await job.done.wait()
        assert job.run.counts() == {"completed": 10}


async def test_a_deadline_already_past_is_refused(tmp_path: Path) -> None:
    from p2psched.scheduler.job import JobSpecError

    async with network(tmp_path, [WorkerConfig(drivers=("echo",))]) as (scheduler, _):
        late = echo_job(1, deadline="2001-01-01T00:00:00Z")
        with pytest.raises(JobSpecError, match="deadline: .* already passed"):
            scheduler.jobs.submit(parse_job(late))
        assert scheduler.jobs.jobs == {}  # nothing half-submitted


async def test_a_small_job_is_not_starved_by_a_large_one_on_the_same_node(tmp_path: Path) -> None:
    configs = [WorkerConfig(slots=1, drivers=("sleep",)) for _ in range(2)]
    async with network(tmp_path, configs) as (scheduler, _):

        def naps(name: str, n: int) -> dict[str, Any]:
            return {
                "name": name,
                "driver": "sleep",
                "template": {"input": {"seconds": 0.1}},
                "matrix": {"i": list(range(n))},
            }

        big = scheduler.jobs.submit(parse_job(naps("big", 80)))  # about 4 s on two slots
        with trio.fail_after(60):
            while big.run.counts().get("completed", 0) < 4:
                await trio.sleep(0.05)
            small = scheduler.jobs.submit(parse_job(naps("small", 4)))
            await small.done.wait()
            left = len(big.run.tasks) - big.run.counts().get("completed", 0)
            await big.done.wait()
        assert small.run.counts() == {"completed": 4} and big.run.counts() == {"completed": 80}
        # The small job's tasks became due before most of the big one's: they went first.
        assert left > 40, left  # without this rule: 0 (it waited for all of the big one)
