"""The command driver's attacks through a running worker, over real sockets: a scheduler's
jobs that look for the worker's secrets or try to exhaust it end as tasks that found nothing
or failed with their reason, and the worker serves the next job."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched.identity import Identity
from p2psched.node.node import Node, open_node
from p2psched.scheduler.job import parse_job
from p2psched.worker.config import CommandDriverConfig, WorkerConfig
from tests.adversarial.test_command_driver import KEY, READS_EVERYTHING, TOKEN, script
from tests.harness.network import network

PROGRAMS = {
    "wc": {"argv": ["/usr/bin/wc"], "params": {"lines": {"type": "flag", "arg": "-l"}}},
    "py": {"argv": ["/usr/bin/python3"], "params": {"script": {"type": "file"}}},
}
BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


@pytest.fixture
def base() -> Iterator[Path]:
    """Where the nodes keep their data dirs: reachable by anyone, so that only the sandbox
    keeps a task from the worker's files."""
    path = Path(tempfile.mkdtemp(prefix="p2psched-net-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def run_job(scheduler: Node, tasks: list[dict[str, Any]], timeout: float) -> list[Any]:
    spec = {"name": "j", "driver": "command", "retries": 0, "timeout": timeout, "tasks": tasks}
    job = scheduler.jobs.submit(parse_job(spec))
    with trio.fail_after(120):
        await job.done.wait()
    return [(t.state.name, t.output, t.error) for t in job.run.tasks.values()]


async def test_a_worker_gives_away_no_secret_and_outlives_a_bomb(base: Path) -> None:
    limits = {"processes": 16, "cpu_s": 5, "memory_mb": 512}
    driver = CommandDriverConfig(programs=PROGRAMS, stderr=True, limits=limits)
    config = WorkerConfig(slots=1, drivers=("command",), command_driver=driver)
    async with network(base, [config]) as (scheduler, [worker]):
        data = worker.data_dir
        data.chmod(0o755)
        (data / "identity.key").write_bytes(KEY)
        (data / "api.token").write_text(TOKEN)
        for name in ("identity.key", "api.token"):
            (data / name).chmod(0o644)

        looked = await run_job(
            scheduler, [{"input": script(READS_EVERYTHING.format(data=data))}], 60
        )
        assert KEY.decode() not in repr(looked) and TOKEN not in repr(looked)
        assert "SECRET" not in repr(looked) and "found" not in repr(looked)

        attacks = await run_job(
            scheduler,
            [
                {"input": script(BOMB)},
                {"input": script("b = bytearray(10 << 30)")},
            ],
            4,
        )
        states = [state for state, _, _ in attacks]
        errors = sorted(str(error) for _, _, error in attacks)
        assert states == ["FAILED", "FAILED"], attacks
        assert any("MemoryError" in e for e in errors), errors
        assert any("timed out after 4s" in e for e in errors), errors

        # The first scheduler's own breaker now skips this worker (it failed twice): the worker
        # serving the next job is seen from a scheduler that has no such memory.
        async with open_node(
            Identity.generate(), base / "s2", seeds=[worker.dht.address], dht_client=True
        ) as other:
            honest = await run_job(
                other, [{"input": {"program": "wc", "params": {"lines": True}, "stdin": "a\n"}}], 30
            )
        assert [(state, output) for state, output, _ in honest] == [
            ("COMPLETED", {"exit_code": 0, "stdout": "1\n", "stderr": ""})
        ]
