"""The scheduler's shell between real nodes in this process: a link to a worker outlives the
job that opened it for a while, for the next one; a job handed the workers found for it
starts on them without a look in the DHT."""

from __future__ import annotations

from pathlib import Path

import trio

from p2psched.resources.need import Need
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.job import parse_job
from p2psched.scheduler.service import LINGER_S
from tests.harness.network import ECHO, echo_job, network


async def test_a_link_no_job_needs_stays_open_for_the_next_job_then_closes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with network(tmp_path, [ECHO]) as (scheduler, _):
        dispatcher = scheduler.jobs.dispatcher
        for _ in range(2):
            job = scheduler.jobs.submit(parse_job(echo_job(1)))
            with trio.fail_after(30):
                await job.done.wait()
            assert job.run.counts() == {"completed": 1}
            assert dispatcher.connected_workers == 1  # kept for the next job
        await trio.sleep(LINGER_S + 1)
        assert dispatcher.connected_workers == 0


async def test_a_job_handed_its_workers_starts_on_them_without_the_dht(tmp_path: Path) -> None:
    async with network(tmp_path, [ECHO]) as (scheduler, [worker]):
        found = await scheduler.discovery.find(Need.parse("driver=echo"))
        assert [ad.node_id for ad in found] == [worker.node_id]
        asked: list[Need] = []

        async def find(need: Need) -> list[WorkerAd]:
            asked.append(need)
            return []

        scheduler.jobs.dispatcher.find = find
        job = scheduler.jobs.submit(parse_job(echo_job(2)), found=found)
        with trio.fail_after(30):
            await job.done.wait()
        assert job.run.counts() == {"completed": 2} and asked == []
