"""A scheduler node killed with SIGKILL and started again resumes its jobs: nothing completed
runs again, nothing in flight is lost, no result is counted twice; and its ledger adds up and
verifies from the signatures alone. Separate processes on loopback, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from p2psched import devnet
from p2psched.api.client import ControlClient
from tests.harness.processes import EXE, matrix_job, p2psched, receipts_issued


def start_node(gate: str, data: Path) -> subprocess.Popen[bytes]:
    with open(data.parent / f"{data.name}.log", "ab") as log:
        proc = subprocess.Popen(
            [*EXE, "node", "--gate", gate, "--data-dir", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while (client := ControlClient.find(data)) is None or not _answers(client):
        assert proc.poll() is None and time.monotonic() < deadline, "the node did not start"
        time.sleep(0.1)
    return proc


def _answers(client: ControlClient) -> bool:
    try:
        with client:
            client.get("/v1/node")
        return True
    except Exception:
        return False


def status(job: str, data: Path) -> dict:
    out = p2psched("status", job, "--json", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("net", [2], indirect=True)
def test_a_scheduler_killed_mid_job_resumes_it(net: devnet.Devnet, tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    n = 16
    job = matrix_job(tmp_path, "naps", "sleep", "{seconds: 1.0}", n, "timeout: 1m\n")
    node = start_node(net.gate, data)
    try:
        out = p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(data))
        assert out.returncode == 0, out.stderr
        job_id = json.loads(out.stdout)["job"]
        deadline = time.monotonic() + 90
        while (s := status(job_id, data))["completed"] < 3:
            assert time.monotonic() < deadline and s["state"] == "running"
            time.sleep(0.1)
        assert s["running"] > 0  # some are on workers as it dies
        before = s["completed"]
        os.kill(node.pid, signal.SIGKILL)
        node.wait(timeout=10)
        time.sleep(2.5)  # the workers finish what they ran, and keep the results for it
        node = start_node(net.gate, data)
        s = status(job_id, data)
        assert s["completed"] >= before  # what was done is still done, read back from disk
        deadline = time.monotonic() + 120
        while (s := status(job_id, data))["state"] == "running":
            assert time.monotonic() < deadline, s
            time.sleep(0.2)
        out = p2psched("tasks", job_id, "--json", "--data-dir", str(data))
        tasks = json.loads(out.stdout)["tasks"]
        errors = Counter((t["state"], t["error"]) for t in tasks)
        assert s["completed"] == n and s["failed"] == 0, errors
        assert sorted(t["task"] for t in tasks) == sorted(f"{job_id}/{i}" for i in range(n))
        assert all(t["state"] == "completed" for t in tasks)

        # Each task ran to completion once: the workers' own ledgers hold one successful
        # receipt per task, across both of them (so nothing done was run again).
        issued = Counter(t for w in net.folder.glob("worker-*/") for t in receipts_issued(w))
        assert issued == {f"{job_id}/{i}": 1 for i in range(n)}

        # Every transition is on record, with its time, across both lives of the node.
        out = p2psched("history", f"{job_id}/0", "--json", "--data-dir", str(data))
        assert out.returncode == 0, out.stderr
        moves = json.loads(out.stdout)["transitions"]
        assert (moves[0]["from"], moves[0]["to"]) == ("unscheduled", "queued")
        assert moves[-1]["to"] == "completed"
        assert [m["at"] for m in moves] == sorted(m["at"] for m in moves)
        bad = p2psched("history", f"{job_id}/99", "--data-dir", str(data))
        assert bad.returncode == 2 and "has no task 99" in bad.stderr

        # The scheduler paid for each task once, and every entry verifies.
        out = p2psched("ledger", "--verify", "--json", "--data-dir", str(data))
        assert out.returncode == 0, out.stderr
        ledger = json.loads(out.stdout.splitlines()[0])
        (row,) = [j for j in ledger["jobs"] if j["job"] == job_id]
        assert row["tasks_paid"] == n
        assert row["spent"] == pytest.approx(s["spent"])
        assert ledger["problems"] == []
    finally:
        node.kill()
        node.wait(timeout=10)
