"""Structured logs: JSON lines from a real CLI process, a job's events carrying its job and
each node's events its node when several run in one process, and the text format."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched import logs
from p2psched.scheduler.job import parse_job
from p2psched.worker.config import WorkerConfig
from tests.harness.network import echo_job, network
from tests.harness.processes import EXE


@pytest.fixture
def configured() -> Iterator[None]:
    """Leave the process's logging as the test found it."""
    root, ours = logging.getLogger(), logging.getLogger("p2psched")
    handlers, levels = list(root.handlers), (root.level, ours.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


def json_lines(text: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    for e in events:
        assert {"ts", "level", "logger", "event"} <= set(e), e
        assert datetime.fromisoformat(e["ts"]).utcoffset() == UTC.utcoffset(None)
    return events


def gate(tmp_path: Path, *flags: str) -> tuple[str, str]:
    """Run a gate until it is up, stop it as an operator would; its node id and stderr."""
    env = {**os.environ, "P2PSCHED_HOME": str(tmp_path / "home")}
    argv = [*EXE, "gate", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "g"), *flags]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()  # "gate <id> listening on ..."
        # (Line by line until the API is up; a gate that exits ends the loop at end of file.)
        for line in proc.stdout:
            if "control API" in line:
                break
        else:
            pytest.fail(f"the gate exited before its API was up: {proc.stderr.read()}")
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # (Seen once in a clean CI run: said here with what it logged, rather than a wait
            # on it until pytest-timeout and a ResourceWarning failing a later test.)
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the gate did not stop within 30 s of SIGINT; it logged: {err}")
    assert proc.returncode == 0, err
    return first.split()[1], err


def test_a_gate_run_with_log_json_writes_json_lines_that_carry_its_node(tmp_path: Path) -> None:
    node_id, err = gate(tmp_path, "--log-json", "--log-level", "info")
    events = json_lines(err)
    up = [e for e in events if e["event"].startswith("node up")]
    assert len(up) == 1 and up[0]["level"] == "info" and up[0]["logger"] == "p2psched.node.node"
    assert all(e["node"] == node_id for e in events)  # the API server's too


def test_by_default_a_node_says_nothing_unless_something_is_wrong(tmp_path: Path) -> None:
    _, err = gate(tmp_path)
    assert err.strip() == "stopped"


async def test_a_jobs_events_carry_its_job_and_each_node_its_own_id(
    tmp_path: Path, configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("debug", as_json=True)
    configs = [WorkerConfig(slots=2, drivers=("echo",)) for _ in range(2)]
    async with network(tmp_path, configs) as (scheduler, workers):
        job = scheduler.jobs.submit(parse_job(echo_job(6)))
        with trio.fail_after(30):
            await job.done.wait()
    events = json_lines(capsys.readouterr().err)
    mine = [e for e in events if e.get("job") == job.job_id]
    said = [e["event"] for e in mine if e["level"] == "info"]
    assert said[0] == f"job {job.job_id} submitted: 6 tasks"
    assert said[-1].startswith(f"job {job.job_id} finished in") and "6 completed" in said[-1]
    settled = [e for e in mine if e["level"] == "debug" and e["logger"].endswith("service")]
    # Each task settles on the scheduler and runs on a worker: both say so, naming it.
    assert sorted(e["task"] for e in settled) == sorted(t for t in job.run.tasks for _ in (1, 2))
    by_node = {e["node"] for e in settled}
    assert scheduler.node_id.hex() in by_node and by_node <= {
        n.node_id.hex() for n in (scheduler, *workers)
    }
    assert len(by_node) > 1  # the workers' events carry their own ids, not the scheduler's


def test_json_carries_extra_fields_and_the_error(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("info", as_json=True)
    log = logging.getLogger("p2psched.test")
    with logs.naming_node(b"\x01" * 32):
        try:
            raise ValueError("bad shape")
        except ValueError:
            log.exception("task failed", extra={"job": "j", "task": "j/3", "worker": "ab"})
    log.debug("not shown at info")
    logging.getLogger("somelibrary").info("nor a library's info")
    (event,) = json_lines(capsys.readouterr().err)
    assert event["node"] == "01" * 32 and event["job"] == "j" and event["task"] == "j/3"
    assert event["worker"] == "ab" and event["level"] == "error" and event["event"] == "task failed"
    assert event["error"] == "ValueError: bad shape" and "Traceback" in event["traceback"]


def test_text_is_one_short_line_with_the_ids(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("info")
    with logs.naming_node(bytes.fromhex("ab" * 32)), logs.naming_task("j", "j/1"):
        logging.getLogger("p2psched.worker.drivers").warning("http driver: no answer")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(
        "WARNING worker.drivers: http driver: no answer  job=j  task=j/1  node=abababab"
    )
    with pytest.raises(ValueError, match="choose one of debug, info, warning, error"):
        logs.configure("loud")


def test_text_a_peer_wrote_stays_on_its_line_and_sends_no_escapes(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker's refusal, a scheduler's task id: a peer's text (up to 300 characters of
    anything) must not forge a log line of its own nor drive the operator's terminal."""
    logs.configure("info")
    forged = "bye\n12:00:00.000 ERROR   node: the api token is 0000\x1b[2J\r"
    with logs.naming_task("j", "j/1\nERROR forged"):
        logging.getLogger("p2psched.scheduler.service").info("worker lost: %s", forged)
    (line,) = capsys.readouterr().err.splitlines()
    assert "\x1b" not in line and "\r" not in line
    assert line.endswith(
        "worker lost: bye\\n12:00:00.000 ERROR   node: the api token is 0000\\x1b[2J\\r"
        "  job=j  task=j/1\\nERROR forged"
    )
