"""`p2psched submit` as a user runs it, against a devnet's processes on loopback: results and
receipts written (for their owner's eyes only), a worker killed mid-job, a bad spec refused
before anything is sent, failures printed as they are, and a job from a scheduler the worker's
operator denies."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from p2psched import devnet
from p2psched.api.client import ControlClient
from tests.harness.processes import (
    EXE,
    gate_and_worker,
    load_receipt,
    matrix_job,
    p2psched,
    running_node,
    submit_json,
    write_job,
)


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
    # Another user of the machine reads none of them.
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o600}
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


def test_a_timestamp_deadline_survives_the_trip_to_a_running_node() -> None:
    import yaml

    from p2psched.cli.submit import _iso
    from p2psched.scheduler.job import parse_job

    doc = yaml.safe_load("name: x\ndeadline: 2099-01-01T00:00:00Z\ntasks: [{input: 1}]\n")
    sent = json.loads(json.dumps(doc, default=_iso))  # what submit posts to the control API
    assert sent["deadline"].startswith("2099-01-01T00:00:00")
    assert parse_job(sent).deadline == parse_job(doc).deadline


def test_a_job_from_a_scheduler_the_worker_denies_fails_saying_so(tmp_path: Path) -> None:
    """The only worker's operator denies this scheduler: `submit` ends with the job failed,
    and the reason is the worker's refusal (after the 5 s the job lets a task wait for one)."""
    me = tmp_path / "me"
    out = p2psched("init", "--data-dir", str(me))
    assert out.returncode == 0, out.stderr
    my_id = p2psched("id", "--data-dir", str(me)).stdout.strip()
    config = f'[worker]\ndrivers = ["echo"]\n[schedulers]\ndeny = ["{my_id}"]\n'
    with gate_and_worker(tmp_path, config) as (gate, _, _, _):
        job = matrix_job(tmp_path, "turned-away", "echo", "'{i}'", 2, "wait_for_worker: 5s\n")
        out = submit_json(job, gate, tmp_path / "results", me)
    assert out.returncode == 1, out.stderr
    summary = json.loads(out.stdout)
    assert summary["failed"] == 2 and summary["completed"] == 0
    refusal = f"this worker does not serve scheduler {my_id[:16]}…: denied by its operator"
    assert all(refusal in f["error"] for f in summary["failures"]), summary["failures"]


def test_a_task_its_worker_failed_ends_with_the_workers_reason(tmp_path: Path) -> None:
    """The only worker has the http driver but no endpoint for the job's model: the task ends
    (after the 5 s it waits for another worker) with that worker's reason, and how many
    workers failed it so, in the summary, the results, `tasks` and the API alike."""
    config = (
        '[worker]\ndrivers = ["http"]\nmodels = ["llama-3-8b"]\n'
        '[drivers.http]\nendpoints = { "other-model" = "http://127.0.0.1:9/v1/completions" }\n'
    )
    job = write_job(
        tmp_path / "llm.yaml",
        "name: llm\ndriver: http\nresources: {model: llama-3-8b}\nwait_for_worker: 5s\n"
        "tasks: [{input: {prompt: hi}}]\n",
    )
    reason = "this worker serves no endpoint for model 'llama-3-8b'"
    me = tmp_path / "me"
    with gate_and_worker(tmp_path, config) as (gate, _, _, _), running_node(gate, me):
        out = p2psched(
            "submit", str(job), "--json", "--results", str(tmp_path / "r"), "--data-dir", str(me)
        )
        assert out.returncode == 1, out.stderr
        summary = json.loads(out.stdout)
        (failure,) = summary["failures"]
        assert reason in failure["error"] and "(1 worker failed it so)" in failure["error"]
        assert "kept failing" not in failure["error"]
        (result,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "llm").glob("0*.json")]
        assert result["error"] == failure["error"]
        listed = p2psched("tasks", summary["job"], "--json", "--data-dir", str(me))
        assert json.loads(listed.stdout)["tasks"][0]["error"] == failure["error"]
        with ControlClient.find(me) as client:  # type: ignore[union-attr]
            (task,) = client.get(f"/v1/jobs/{summary['job']}/tasks")["tasks"]
    assert task["error"] == failure["error"], task


def _running_on(worker_dir: Path) -> float:
    """Tasks the worker runs now, as its metrics say."""
    with ControlClient.find(worker_dir) as client:  # type: ignore[union-attr]
        metrics = client.get_bytes("/metrics").decode()
    (line,) = [x for x in metrics.splitlines() if x.startswith("p2psched_worker_tasks_running ")]
    return float(line.split()[1])


@pytest.mark.parametrize("net", [1], indirect=True)
@pytest.mark.parametrize("through", ["embedded node", "running node"])
def test_ctrl_c_cancels_the_job_and_keeps_what_came_back(
    net: devnet.Devnet, tmp_path: Path, through: str
) -> None:
    """Ctrl-C on `submit` (of its own node, or of a node running on its data dir): the job is
    cancelled (the task stops on its worker), the result that came back and a summary saying
    so are written, the exit status is 130, and a node started later on the data dir does not
    take the job up again."""
    job = write_job(
        tmp_path / "naps.yaml",
        "name: naps\ndriver: sleep\ntimeout: 10m\nretries: 0\n"
        "tasks:\n  - {input: {seconds: 0.05}}\n  - {input: {seconds: 300}}\n",
    )
    me, results, worker_dir = tmp_path / "me", tmp_path / "results", net.folder / "worker-0"
    args = ["submit", str(job), "--results", str(results), "--data-dir", str(me)]
    with ExitStack() as stack:
        if through == "running node":
            stack.enter_context(running_node(net.gate, me))
        else:
            args += ["--gate", net.gate]
        submit = stack.enter_context(
            subprocess.Popen([*EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
        try:
            deadline = time.monotonic() + 60
            while not (results / "naps" / "000000.json").exists() or _running_on(worker_dir) < 1:
                assert time.monotonic() < deadline and submit.poll() is None, "no progress"
                time.sleep(0.1)
            submit.send_signal(signal.SIGINT)
            out, err = submit.communicate(timeout=60)
        finally:
            submit.kill()
    said = out.decode()
    assert submit.returncode == 130, said + err.decode()
    assert "interrupted: job naps-" in said and "cancelled" in said, said
    assert f"1 of 2 task(s) had completed: what came back is in {results / 'naps'}" in said
    folder = results / "naps"
    quick, slow = (json.loads((folder / f"00000{i}.json").read_text()) for i in (0, 1))
    assert quick["state"] == "completed" and slow["state"] == "aborted"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["completed"] == 1
    with sqlite3.connect(me / "state.db") as db:
        ((_, finished_at),) = db.execute("SELECT id, finished_at FROM jobs").fetchall()
        states = dict(db.execute("SELECT id, state FROM tasks").fetchall())
    assert finished_at is not None and sorted(states.values()) == ["aborted", "completed"]
    deadline = time.monotonic() + 30
    while _running_on(worker_dir) > 0:  # the cancel reached the worker: the nap stopped
        assert time.monotonic() < deadline, "the cancelled task still runs on its worker"
        time.sleep(0.1)
    with running_node(net.gate, me):  # a node on the data dir takes up no job: it lists it
        listed = json.loads(p2psched("jobs", "--json", "--data-dir", str(me)).stdout)["jobs"]
        assert [(j["name"], j["state"], j["resumed_at"]) for j in listed] == [
            ("naps", "cancelled", None)
        ]


@pytest.mark.parametrize("net", [1], indirect=True)
def test_a_data_dir_a_submit_holds_refuses_others_with_advice_that_works(
    net: devnet.Devnet, tmp_path: Path
) -> None:
    """A `submit` that runs its job from a node of its own on --data-dir holds that data dir;
    a second command there is refused, and what the refusal advises works: it names no control
    API to ask unless one answers there."""
    job = matrix_job(tmp_path, "long", "sleep", "{seconds: 300}", 1, "timeout: 10m\n")
    me = tmp_path / "me"
    argv = [*EXE, "submit", str(job), "--gate", net.gate, "--data-dir", str(me)]
    with subprocess.Popen(
        [*argv, "--results", str(tmp_path / "r")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as first:
        try:
            deadline = time.monotonic() + 60
            while not (me / "node.lock").exists() or not (me / "state.db").exists():
                assert time.monotonic() < deadline and first.poll() is None, "no node started"
                time.sleep(0.1)
            second = p2psched("submit", str(job), "--gate", net.gate, "--data-dir", str(me))
            asked = p2psched("jobs", "--data-dir", str(me))
        finally:
            first.send_signal(signal.SIGINT)
            first.wait(timeout=60)
    assert second.returncode != 0 and "in use by" in second.stderr, second.stderr
    if "control API" in second.stderr:
        assert asked.returncode == 0, (second.stderr, asked.stderr)
