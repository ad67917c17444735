"""A job whose need no worker meets: the scheduler says so as soon as the DHT was read, with
the nearest misses, and its tasks fail with them after `no_worker_s` (on trio's fake clock)."""

from __future__ import annotations

import trio
import trio.testing

from p2psched.gate.client import open_worker_channel
from p2psched.identity import Identity
from p2psched.resources.need import Need, nearest_misses
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.run import DispatchConfig, JobRun
from p2psched.scheduler.service import Dispatcher
from tests.harness.net import ad, spec

NEED = "driver=command,max_price<=0.001"
WHY = "1 worker has driver=command but asks 0.01 > max_price 0.001"


async def test_no_worker_matching_is_said_at_once_and_ends_its_tasks_with_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    me = Identity.generate()
    dear = ad(Identity.generate(), price=0.01, drivers=("command",))

    async def find(need: Need) -> list[WorkerAd]:
        return [a for a in (dear,) if need.matches(a.profile)]

    def explain(need: Need) -> str:
        return nearest_misses(need, [dear.profile])

    dispatcher = Dispatcher(me, find, open_worker_channel, clock=trio.current_time, explain=explain)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.serve)
        start = trio.current_time()
        run = JobRun(me, "job", [spec(0, need=NEED)], mtr=0, now=start)
        done = dispatcher.add(run)
        await trio.sleep(1.0)  # one look in the DHT, no more
        assert run.unmatched_report() == [{"need": NEED, "tasks": 1, "why": WHY}]
        assert run.counts() == {"queued": 1}
        await done.wait()
        assert trio.current_time() - start >= DispatchConfig().no_worker_s
        error = run.tasks["job-000000"].error
        assert error == f"no worker found that meets {NEED}: {WHY}"
        nursery.cancel_scope.cancel()


def test_a_worker_found_later_that_meets_the_need_clears_it() -> None:
    me = Identity.generate()
    run = JobRun(me, "job", [spec(0, need=NEED)], mtr=0, now=0.0)
    run.no_worker_found(Need.parse(NEED), WHY)
    assert run.unmatched_report()[0]["why"] == WHY
    run.add_workers([ad(Identity.generate(), price=0.001, drivers=("command",))], 1.0)
    assert run.unmatched_report() == []
    # ... and one that is already known is not said to be missing.
    run.no_worker_found(Need.parse(NEED), WHY)
    assert run.unmatched_report() == []
