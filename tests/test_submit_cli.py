"""`p2psched submit` and `p2psched devnet` as a user runs them: separate processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from p2psched import devnet
from p2psched.api.client import ControlClient
from tests.harness.processes import EXE, load_receipt, matrix_job, p2psched, submit_json, write_job


def test_two_hundred_tasks_through_the_cli(net: devnet.Devnet, tmp_path: Path) -> None:
    job = matrix_job(tmp_path, "many", "echo", "{n: '{i}', text: 'hello {i}'}", 200)
    out = submit_json(job, net.gate, tmp_path / "results", tmp_path / "me")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["completed"] == 200 and summary["total"] == 200 and summary["failed"] == 0
    folder = tmp_path / "results" / "many"
    results = sorted(folder.glob("[0-9]*[0-9].json"))
    receipts = sorted(folder.glob("*.receipt.json"))
    assert len(results) == 200 and len(receipts) == 200
    workers = set()
    for r_path, rc_path in zip(results, receipts):
        result = json.loads(r_path.read_text())
        assert result["state"] == "completed"
        assert result["output"] == {"n": result["index"], "text": f"hello {result['index']}"}
        receipt, key = load_receipt(rc_path)
        assert receipt.verify(key) and receipt.task == result["task"]
        workers.add(receipt.worker)
    assert len(workers) == 5


@pytest.mark.parametrize("net", [3], indirect=True)
def test_worker_killed_mid_job(net: devnet.Devnet, tmp_path: Path) -> None:
    job = matrix_job(tmp_path, "naps", "sleep", "{seconds: 0.3}", 40, "retries: 3\n")
    results = tmp_path / "results"
    submit = subprocess.Popen(
        [
            *EXE,
            "submit",
            str(job),
            "--gate",
            net.gate,
            "--json",
            "--results",
            str(results),
            "--data-dir",
            str(tmp_path / "me"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        folder = results / "naps"
        deadline = time.monotonic() + 60
        while len(list(folder.glob("*.receipt.json"))) < 4:
            assert time.monotonic() < deadline and submit.poll() is None, "no progress"
            time.sleep(0.05)
        os.kill(net.pids["worker-0"], signal.SIGKILL)
        out, err = submit.communicate(timeout=120)
    finally:
        submit.kill()
    assert submit.returncode == 0, err
    summary = json.loads(out)
    assert summary["completed"] == 40 and summary["failed"] == 0
    results_seen = [json.loads(p.read_text()) for p in folder.glob("[0-9]*[0-9].json")]
    assert sorted(r["index"] for r in results_seen) == list(range(40))  # each exactly once
    assert any(r["attempts"] > 0 for r in results_seen)  # some were lost with the worker


def test_bad_spec_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    job = write_job(tmp_path / "bad.yaml", "name: x\ndriver: ftp\ntasks: [{input: 1}]\n")
    # the gate address is not even listened on: validation comes first
    out = p2psched("submit", str(job), "--gate", "127.0.0.1:9", "--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert str(job) in out.stderr and "driver" in out.stderr and "ftp" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()


def test_detach_needs_a_running_node(tmp_path: Path) -> None:
    job = write_job(tmp_path / "ok.yaml", "name: x\ntasks: [{input: 1}]\n")
    out = p2psched("submit", str(job), "--detach", "--data-dir", str(tmp_path / "none"))
    assert out.returncode == 2 and "--detach needs a node running on" in out.stderr


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


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["cancel", "somejob/"], "give a job (JOB) or one of its tasks (JOB/N)"),
        (["node", "--gate", "127.0.0.1:9", "--api-port", "70000"], "is not a port number"),
        (["devnet", "up", "--workers", "0"], "a devnet has 1..200 workers"),
        (["status", "../node"], "no node runs on"),
    ],
)
def test_bad_command_lines_are_one_clear_line(tmp_path: Path, args: list[str], says: str) -> None:
    out = (
        p2psched(*args, "--data-dir", str(tmp_path))
        if args[0] in ("cancel", "status")
        else (p2psched(*args))
    )
    assert out.returncode == 2 and says in out.stderr
    assert "Traceback" not in out.stderr


def test_failure_reasons_are_printed_as_they_are(tmp_path: Path) -> None:
    from p2psched.cli.submit import ResultsFolder, _finish

    status = {
        "job": "j-1",
        "total": 1,
        "completed": 0,
        "failed": 1,
        "workers": 1,
        "spent": 0.0,
        "elapsed_s": 1.0,
    }
    failure = {
        "task": "j-1/0",
        "name": "0",
        "state": "failed",
        "error": "exited with code 1: cannot read [/data/in.png] [bold]",
    }
    code = _finish(status, ResultsFolder(tmp_path, "j"), [failure], as_json=False)
    assert code == 1  # and no MarkupError on the way


@pytest.mark.parametrize("net", [2], indirect=True)
def test_a_drained_worker_takes_no_new_tasks(net: devnet.Devnet, tmp_path: Path) -> None:
    drained = net.folder / "worker-0"
    out = p2psched("worker", "drain", "--data-dir", str(drained))
    assert out.returncode == 0 and "draining" in out.stdout, out.stderr
    job = matrix_job(tmp_path, "hi", "echo", "'{i}'", 10)
    out = submit_json(job, net.gate, tmp_path / "r", tmp_path / "me")
    assert out.returncode == 0, out.stderr
    drained_id = json.loads((drained / "api.json").read_text())["node_id"]
    workers = {
        load_receipt(p)[0].worker.hex() for p in (tmp_path / "r" / "hi").glob("*.receipt.json")
    }
    assert workers and drained_id not in workers
    out = p2psched("worker", "undrain", "--data-dir", str(drained))
    assert out.returncode == 0 and "taking tasks again" in out.stdout


def test_drain_on_a_node_that_is_not_a_worker(node: Path) -> None:
    out = p2psched("worker", "drain", "--data-dir", str(node))
    assert out.returncode == 2 and "this node is not a worker" in out.stderr


def test_a_timestamp_deadline_survives_the_trip_to_a_running_node() -> None:
    import yaml

    from p2psched.cli.submit import _iso
    from p2psched.scheduler.job import parse_job

    doc = yaml.safe_load("name: x\ndeadline: 2099-01-01T00:00:00Z\ntasks: [{input: 1}]\n")
    sent = json.loads(json.dumps(doc, default=_iso))  # what submit posts to the control API
    assert sent["deadline"].startswith("2099-01-01T00:00:00")
    assert parse_job(sent).deadline == parse_job(doc).deadline
