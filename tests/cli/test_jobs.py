"""The commands about jobs against a running node: `submit --detach`, `status`, `jobs`,
`tasks`, `cancel`, and the scheduler switches the jobs that follow obey."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from p2psched import devnet
from p2psched.api.client import ControlClient
from tests.harness.processes import EXE, matrix_job, p2psched, receipts_issued


@pytest.mark.parametrize("net", [2], indirect=True)
def test_a_running_node_takes_jobs_and_answers_status_commands(node: Path, tmp_path: Path) -> None:
    job = matrix_job(tmp_path, "naps", "sleep", "{seconds: 0.05}", 12)
    out = p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(node))
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["job"]
    assert job_id.startswith("naps-")
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(p2psched("status", job_id, "--json", "--data-dir", str(node)).stdout)
        if status["state"] == "done":
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status["completed"] == 12
    listed = json.loads(p2psched("jobs", "--json", "--data-dir", str(node)).stdout)
    assert [j["job"] for j in listed] == [job_id]
    tasks = json.loads(
        p2psched("tasks", job_id, "--state", "completed", "--json", "--data-dir", str(node)).stdout
    )
    assert len(tasks) == 12 and all(t["worker"] for t in tasks)
    bad = p2psched("tasks", job_id, "--state", "finished", "--data-dir", str(node))
    assert bad.returncode == 2 and "unknown state 'finished'" in bad.stderr
    missing = p2psched("status", "nope", "--data-dir", str(node))
    assert missing.returncode == 2 and "no job 'nope'" in missing.stderr

    # what the node learned of the workers that ran it: expected wait and run time each
    with ControlClient.find(node) as client:  # type: ignore[union-attr]
        info = client.get("/v1/queue/info")
    assert info["status"] == "success" and len(info["queues"]) == 2
    for q in info["queues"]:
        assert q["source"] == "worker" and q["run_time_expect"] > 0  # observed, any model
        assert q["view"]["succeeded_tasks"] > 0

    # the strategy and the predictor switch while the node runs, for the jobs that follow
    out = p2psched("scheduler", "set", "round_robin", "--json", "--data-dir", str(node))
    assert out.returncode == 0 and json.loads(out.stdout)["strategy"] == "round_robin"
    bad = p2psched("scheduler", "set", "fastest", "--data-dir", str(node))
    assert bad.returncode == 2 and "no scheduling strategy 'fastest'" in bad.stderr
    assert "late_binding" in bad.stderr  # it names the valid ones
    out = p2psched("scheduler", "predict-mode", "lookup_table", "--data-dir", str(node))
    assert out.returncode == 0 and "predict mode lookup_table" in out.stdout
    bad = p2psched("scheduler", "predict-mode", "guess", "--data-dir", str(node))
    assert bad.returncode == 2 and "lookup_table" in bad.stderr

    # without --detach, the results come back through the node
    out = p2psched(
        "submit", str(job), "--json", "--results", str(tmp_path / "r"), "--data-dir", str(node)
    )
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "r" / "naps").glob("*.receipt.json"))) == 12


@pytest.mark.parametrize("net", [1], indirect=True)
def test_cancel_a_running_job(node: Path, tmp_path: Path) -> None:
    job = matrix_job(tmp_path, "long", "sleep", "{seconds: 300}", 8, "timeout: 10m\n")
    job_id = json.loads(
        p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(node)).stdout
    )["job"]
    out = p2psched("cancel", f"{job_id}/7", "--data-dir", str(node))
    assert out.returncode == 0 and "cancelled 1 task" in out.stdout
    out = p2psched("cancel", job_id, "--data-dir", str(node))
    assert out.returncode == 0 and "cancelled 7 task" in out.stdout
    status = json.loads(p2psched("status", job_id, "--json", "--data-dir", str(node)).stdout)
    assert status["counts"] == {"aborted": 8} and status["state"] == "done"


@pytest.mark.parametrize("net", [2], indirect=True)
def test_a_cancel_stops_the_work_on_the_workers_and_the_ledgers_agree(
    net: devnet.Devnet, node: Path, tmp_path: Path
) -> None:
    """Tasks cancelled while they run stop on their workers: no worker earns for a task the
    scheduler did not pay, and what each side recorded adds up to the same."""
    job = matrix_job(tmp_path, "naps", "sleep", "{seconds: 2.0}", 8, "timeout: 1m\n")
    job_id = json.loads(
        p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(node)).stdout
    )["job"]
    deadline = time.monotonic() + 60
    while (s := status_of(job_id, node))["counts"].get("running", 0) == 0:
        assert time.monotonic() < deadline, s
        time.sleep(0.1)
    out = p2psched("cancel", job_id, "--data-dir", str(node))
    assert out.returncode == 0, out.stderr
    time.sleep(3.0)  # longer than the naps: a task not stopped would have finished by now
    ledger = json.loads(p2psched("ledger", "--json", "--data-dir", str(node)).stdout)
    (row,) = [j for j in ledger["jobs"] if j["job"] == job_id]
    earned = [t for w in net.folder.glob("worker-*/") for t in receipts_issued(w)]
    paid = [t["task"] for t in tasks_of(job_id, node) if t["state"] == "completed"]
    assert sorted(earned) == sorted(paid)
    assert row["tasks_paid"] == len(paid)


def status_of(job_id: str, node: Path) -> dict:
    return json.loads(p2psched("status", job_id, "--json", "--data-dir", str(node)).stdout)


def tasks_of(job_id: str, node: Path) -> list[dict]:
    return json.loads(p2psched("tasks", job_id, "--json", "--data-dir", str(node)).stdout)


@pytest.mark.parametrize("net", [1], indirect=True)
def test_a_job_taken_up_again_says_so_in_the_log_and_in_jobs(
    net: devnet.Devnet, tmp_path: Path
) -> None:
    """A submit killed outright leaves its job unfinished in the data dir's store; the next
    node started there resumes it, and says so: a warning in its log, and `jobs`."""
    job = matrix_job(tmp_path, "long", "sleep", "{seconds: 300}", 2, "timeout: 10m\n")
    me = tmp_path / "me"
    submit = ("submit", str(job), "--gate", net.gate, "--results", str(tmp_path / "r"))
    with subprocess.Popen([*EXE, *submit, "--data-dir", str(me)], **QUIET) as first:
        try:
            deadline = time.monotonic() + 60
            while not (rows := _jobs_stored(me)):
                assert time.monotonic() < deadline and first.poll() is None, "no job stored"
                time.sleep(0.1)
        finally:
            first.kill()
    (job_id,) = rows
    log = tmp_path / "node.log"
    with (
        log.open("w") as err,
        subprocess.Popen(
            [*EXE, "node", "--gate", net.gate, "--data-dir", str(me)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        ) as node,
    ):
        try:
            deadline = time.monotonic() + 60
            while (client := ControlClient.find(me)) is None:
                assert time.monotonic() < deadline and node.poll() is None, "no node"
                time.sleep(0.1)
            client.close()
            table = p2psched("jobs", "--data-dir", str(me)).stdout
            (listed,) = json.loads(p2psched("jobs", "--json", "--data-dir", str(me)).stdout)
            p2psched("cancel", job_id, "--data-dir", str(me))
        finally:
            node.terminate()
    assert table.splitlines()[2].split()[:3] == [job_id, "running", "(resumed)"], table
    assert listed["job"] == job_id and listed["resumed_at"] is not None
    said = log.read_text()
    assert f"resumed job {job_id} (2 tasks)" in said and f"p2psched cancel {job_id}" in said


QUIET: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def _jobs_stored(data: Path) -> list[str]:
    if not (data / "state.db").exists():
        return []
    try:
        with sqlite3.connect(data / "state.db") as db:
            return [r[0] for r in db.execute("SELECT id FROM jobs")]
    except sqlite3.OperationalError:  # its schema is not made yet
        return []
