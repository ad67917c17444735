"""Group commit, between real nodes in this process: what a role's shell journals in one step
(every message and task end of one batch of trio's runnable tasks) is one transaction, and
still on disk before anything it caused is sent."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

from p2psched.scheduler.job import parse_job
from p2psched.store.journal import Charged, Committed, Entry, Issued
from p2psched.wire.messages import Ack, Commit, Message, Result
from p2psched.worker.config import WorkerConfig
from tests.harness.network import network

TWO_SLOTS = WorkerConfig(slots=2, drivers=("echo", "sleep"))


def _logging_writes(store: Any, log: list[tuple[str, Any]], side: str) -> None:
    write = store.write

    def logged(entries: Iterable[Entry]) -> None:
        entries = list(entries)
        write(entries)
        log.append((f"{side} wrote", entries))

    store.write = logged


async def test_tasks_ending_in_one_step_are_one_transaction_and_written_before_sent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with network(tmp_path, [TWO_SLOTS]) as (scheduler, [worker]):
        log: list[tuple[str, Any]] = []
        _logging_writes(scheduler.store, log, "scheduler")
        _logging_writes(worker.store, log, "worker")
        dispatcher = scheduler.jobs.dispatcher
        send, route = dispatcher._send, dispatcher._route

        def sent(peer: bytes, message: Message) -> None:
            log.append(("scheduler sent", message))
            send(peer, message)

        def heard(peer: bytes, link: Any, message: Message) -> None:
            log.append(("scheduler heard", message))
            route(peer, link, message)

        dispatcher._send, dispatcher._route = sent, heard  # type: ignore[method-assign]
        # Two tasks committed together start together on the worker's two slots, and (on the
        # virtual clock) end at the same instant.
        doc = {
            "name": "two",
            "driver": "sleep",
            "template": {"input": {"seconds": 2}},
            "matrix": {"i": [0, 1]},
        }
        job = scheduler.jobs.submit(parse_job(doc))
        with trio.fail_after(60):
            await job.done.wait()
        assert job.run.counts() == {"completed": 2}

    receipts = [
        [e.receipt.task for e in entries if isinstance(e, Issued)]
        for what, entries in log
        if what == "worker wrote"
    ]
    # The worker: both receipts in one transaction (one write per task end before).
    assert sorted(t for r in receipts if r for t in r) == [f"{job.run.job}/0", f"{job.run.job}/1"]
    assert [sorted(r) for r in receipts if r] == [[f"{job.run.job}/0", f"{job.run.job}/1"]]
    charged = [
        e.receipt.task
        for what, entries in log
        if what == "scheduler wrote"
        for e in entries
        if isinstance(e, Charged)
    ]
    assert sorted(charged) == [
        f"{job.run.job}/0",
        f"{job.run.job}/1",
    ]

    # Nothing goes out before what caused it is on disk: a commitment before its Commit, a
    # receipt before the Ack of its result.
    written: set[tuple[str, str]] = set()
    for what, item in log:
        if what == "scheduler wrote":
            for e in item:
                if isinstance(e, Committed):
                    written.update(("commit", t) for t in e.commitment.tasks)
                elif isinstance(e, Charged):
                    written.add(("charge", e.receipt.task))
        elif what == "scheduler sent" and isinstance(item, Commit):
            assert {("commit", t) for t in item.commitment.tasks} <= written
        elif what == "scheduler sent" and isinstance(item, Ack):
            assert {("charge", t) for t in item.tasks} <= written
    heard = [m for what, m in log if what == "scheduler heard" and isinstance(m, Result)]
    assert len(heard) == 2
