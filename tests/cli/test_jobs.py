"""The commands about jobs against a running node: `submit --detach`, `status`, `jobs`,
`tasks`, `history`, `cancel`, and the scheduler switches the jobs that follow obey."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from p2psched import devnet
from p2psched.api.client import ControlClient
from p2psched.store import Store
from p2psched.store.journal import Committed, Judged
from tests.harness.processes import (
    EXE,
    matrix_job,
    p2psched,
    receipts_issued,
    run_at_home,
    running_node,
    write_job,
)
from tests.harness.store import ME, charged, commitment, opened


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
        if status["state"] != "running":
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status["completed"] == 12 and status["state"] == "completed"
    listed = json.loads(p2psched("jobs", "--json", "--data-dir", str(node)).stdout)["jobs"]
    assert [j["job"] for j in listed] == [job_id]
    tasks = json.loads(
        p2psched("tasks", job_id, "--state", "completed", "--json", "--data-dir", str(node)).stdout
    )["tasks"]
    assert len(tasks) == 12 and all(t["worker"] for t in tasks)
    # the tables: a header row, each header over its column
    jobs = p2psched("jobs", "--data-dir", str(node)).stdout.splitlines()
    row = columns(jobs[0], jobs[2])
    assert [row.get(c) for c in ("JOB", "STATE", "DONE", "FAILED")] == [
        job_id, "completed", "12/12", "0"
    ]  # fmt: skip
    table = p2psched("tasks", job_id, "--data-dir", str(node)).stdout.splitlines()
    assert table[0].split() == ["TASK", "STATE", "WORKER", "ERROR"] and len(table) == 2 + 12
    for row in table[2:]:
        cells = columns(table[0], row)
        assert cells["TASK"].startswith(f"{job_id}/") and cells["STATE"] == "completed", row
        assert len(cells["WORKER"]) == 16 and cells["ERROR"] == "", row
    bad = p2psched("tasks", job_id, "--state", "finished", "--data-dir", str(node))
    assert bad.returncode == 2 and "unknown state 'finished'" in bad.stderr
    missing = p2psched("status", "nope", "--data-dir", str(node))
    assert missing.returncode == 2 and "no job 'nope'" in missing.stderr
    # what it points to is a command that lists the jobs there, not an API route
    assert f"p2psched jobs --data-dir {node}" in missing.stderr, missing.stderr

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
    """A job cancelled says so, in `status` and in `jobs`, though some of its tasks completed;
    each task's history says why it ended."""
    job = write_job(
        tmp_path / "long.yaml",
        "name: long\ndriver: sleep\ntimeout: 10m\ntasks:\n  - input: {seconds: 0.05}\n"
        + "  - input: {seconds: 300}\n" * 7,
    )
    job_id = json.loads(
        p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(node)).stdout
    )["job"]
    deadline = time.monotonic() + 60
    while (s := status_of(job_id, node))["completed"] < 1:
        assert time.monotonic() < deadline, s
        time.sleep(0.1)
    out = p2psched("cancel", f"{job_id}/7", "--data-dir", str(node))
    assert out.returncode == 0 and "cancelled 1 task" in out.stdout
    out = p2psched("cancel", job_id, "--data-dir", str(node))
    assert out.returncode == 0 and "cancelled 6 task" in out.stdout
    while (status := status_of(job_id, node))["state"] == "running":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["counts"] == {"completed": 1, "aborted": 7}
    assert status["state"] == "cancelled"
    said = p2psched("status", job_id, "--data-dir", str(node)).stdout
    assert said.startswith(f"job {job_id}: cancelled, 1/8 done"), said
    table = p2psched("jobs", "--data-dir", str(node)).stdout.splitlines()
    assert columns(table[0], table[2])["STATE"] == "cancelled", table
    history = json.loads(
        p2psched("history", f"{job_id}/3", "--json", "--data-dir", str(node)).stdout
    )
    last = history["transitions"][-1]
    assert last["to"] == "aborted" and last["reason"].startswith("cancelled"), last


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


def columns(header: str, row: str) -> dict[str, str]:
    """A table row's cells under their headers: a cell starts where its header starts (text)
    or ends where it ends (numbers); one that does neither is not under it, and left out."""
    cells: dict[str, str] = {}
    for m in re.finditer(r"\S+", header):
        name, start, end = m.group(), m.start(), m.end()
        if row[start : start + 1].strip() and row[start - 1 : start] in ("", " "):
            cells[name] = re.match(r"\S+(?: \S+)*", row[start:]).group()  # type: ignore[union-attr]
        elif row[end - 1 : end].strip() and row[end : end + 1] in ("", " "):
            cells[name] = row[:end].split()[-1]
        elif not row[start:end].strip():
            cells[name] = ""
    return cells


@pytest.mark.parametrize("net", [2], indirect=True)
def test_history_gives_each_transition_its_own_reason_also_after_a_restart(
    net: devnet.Devnet, tmp_path: Path
) -> None:
    """A task that one worker fails and another fails again: its history says why each move
    happened (submitted, which worker was chosen and at what price, which failed it and with
    what), not one reason repeated; read again after its node restarted, it is the same."""
    bad = write_job(
        tmp_path / "bad.yaml",
        "name: bad\ndriver: command\nretries: 1\ntasks:\n  - input: {program: nope}\n",
    )
    good = write_job(tmp_path / "good.yaml", "name: good\ndriver: echo\ntasks:\n  - input: 1\n")
    data = tmp_path / "me"
    with running_node(net.gate, data):
        ids = [
            json.loads(
                p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(data)).stdout
            )["job"]
            for job in (bad, good)
        ]
        deadline = time.monotonic() + 60
        while any((s := status_of(j, data))["state"] == "running" for j in ids):
            assert time.monotonic() < deadline, s
            time.sleep(0.1)
        before = {j: history_of(j, data) for j in ids}
        table = p2psched("history", f"{ids[0]}/0", "--data-dir", str(data)).stdout.splitlines()
    with running_node(net.gate, data):  # the jobs are finished: the store alone has them now
        after = {j: history_of(j, data) for j in ids}
    assert after == before

    moves = before[ids[0]]["transitions"]
    steps = [(m["from"], m["to"]) for m in moves]
    assert steps[0] == ("unscheduled", "queued") and steps[-1] == ("sent", "failed"), steps
    reasons = [m["reason"] for m in moves]
    assert reasons[0] == "submitted" and all(reasons), reasons
    assert all(a != b for a, b in zip(reasons, reasons[1:])), reasons  # none repeats the last
    refused = "program 'nope' is not allowed on this worker"
    back = moves[steps.index(("sent", "queued"))]["reason"]
    first = re.fullmatch(rf"put back after worker ([0-9a-f]{{16}}) failed it: {refused}.*", back)
    final = re.fullmatch(
        rf"worker ([0-9a-f]{{16}}) failed it, the last of 2 tries: {refused}.*", reasons[-1]
    )
    assert first and final and first[1] != final[1], reasons
    for worker in (first[1], final[1]):
        assert re.search(
            rf"^chose worker {worker} at \S+ \(cost strategy\)$", "\n".join(reasons), re.M
        )
        assert f"committed to worker {worker} at " in "\n".join(reasons)
    # the table shows each move's reason in its WHY column
    assert table[1].split() == ["AT", "FROM", "TO", "WHY"], table
    assert [columns(table[1], row)["WHY"] for row in table[3:]] == reasons, table

    (done,) = [m for m in before[ids[1]]["transitions"] if m["to"] == "completed"]
    assert re.fullmatch(
        r"worker [0-9a-f]{16} ran it in \S+ s; its receipt verified, \S+ paid", done["reason"]
    ), done


def history_of(job_id: str, node: Path) -> dict:
    out = p2psched("history", f"{job_id}/0", "--json", "--data-dir", str(node))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def status_of(job_id: str, node: Path) -> dict:
    return json.loads(p2psched("status", job_id, "--json", "--data-dir", str(node)).stdout)


def tasks_of(job_id: str, node: Path) -> list[dict]:
    return json.loads(p2psched("tasks", job_id, "--json", "--data-dir", str(node)).stdout)["tasks"]


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
            (listed,) = json.loads(p2psched("jobs", "--json", "--data-dir", str(me)).stdout)["jobs"]
            # The warning's hint, run as printed (from a home of its own): it stops the job.
            (hint,) = re.findall(r"`(p2psched cancel [^`]*)`", log.read_text())
            cancelled = run_at_home(*shlex.split(hint)[1:], home=tmp_path)
            stopped = json.loads(p2psched("status", job_id, "--json", "--data-dir", str(me)).stdout)
        finally:
            node.terminate()
    assert cancelled.returncode == 0, (hint, cancelled.stderr)
    assert stopped["state"] == "cancelled", stopped
    assert table.splitlines()[2].split()[:3] == [job_id, "running", "(resumed)"], table
    assert listed["job"] == job_id and listed["resumed_at"] is not None
    said = log.read_text()
    assert f"resumed job {job_id} (2 tasks)" in said and f"p2psched cancel {job_id}" in said
    # Ended, and read by the next node from the store alone: still said to have been resumed.
    with running_node(net.gate, me):
        deadline = time.monotonic() + 30
        while (status := status_of(job_id, me))["state"] == "running":
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        table = p2psched("jobs", "--data-dir", str(me)).stdout
    assert table.splitlines()[2].split()[:3] == [job_id, "cancelled", "(resumed)"], table


QUIET: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def _jobs_stored(data: Path) -> list[str]:
    if not (data / "state.db").exists():
        return []
    try:
        with sqlite3.connect(data / "state.db") as db:
            return [r[0] for r in db.execute("SELECT id FROM jobs")]
    except sqlite3.OperationalError:  # its schema is not made yet
        return []


@pytest.mark.parametrize("net", [2], indirect=True)
def test_jobs_that_ended_read_the_same_after_their_node_restarted(
    net: devnet.Devnet, tmp_path: Path
) -> None:
    """A job completed, one whose task failed (with the worker's reason), one cancelled: once
    the node that ran them stopped and a new one started on its data dir, `jobs`, `status`,
    `tasks` and `results` show them as they did before (from the store: the new node never
    ran them), and `jobs --limit` lists the newest."""
    jobs = {
        "good": write_job(tmp_path / "good.yaml", "name: good\ndriver: echo\ntasks:\n"
                          + "  - input: {n: 1}\n  - input: {n: 2}\n  - input: {n: 3}\n"),
        "bad": write_job(tmp_path / "bad.yaml", "name: bad\ndriver: command\nretries: 0\n"
                         "tasks:\n  - input: {program: nope}\n"),
        "long": matrix_job(tmp_path, "long", "sleep", "{seconds: 300}", 2, "timeout: 10m\n"),
    }  # fmt: skip
    data = tmp_path / "me"
    with running_node(net.gate, data):
        ids = {name: _submitted(job, data) for name, job in jobs.items()}
        assert p2psched("cancel", ids["long"], "--data-dir", str(data)).returncode == 0
        deadline = time.monotonic() + 60
        while any((s := status_of(j, data))["state"] == "running" for j in ids.values()):
            assert time.monotonic() < deadline, s
            time.sleep(0.1)
        before = _as_shown(ids.values(), data, tmp_path / "before")
    with running_node(net.gate, data):
        after = _as_shown(ids.values(), data, tmp_path / "after")
        newest = json.loads(_cli("jobs", "--limit", "1", "--json", data))["jobs"]
        table = _cli("jobs", "--limit", "1", data)

    states = {j["job"]: j["state"] for j in json.loads(before["jobs --json"])["jobs"]}
    assert states == {ids["good"]: "completed", ids["bad"]: "failed", ids["long"]: "cancelled"}
    good = json.loads(before[f"status {ids['good']}"])
    assert (good["completed"], good["total"]) == (3, 3)
    assert good["spent"] > 0 and good["workers"] >= 1
    (failed,) = json.loads(before[f"tasks {ids['bad']}"])["tasks"]
    refused = "program 'nope' is not allowed on this worker"
    assert failed["state"] == "failed" and refused in failed["error"], failed
    assert "(1 worker failed it so)" in failed["error"], failed
    code, summary = before[f"results {ids['bad']}"]
    assert code == 1 and json.loads(summary)["failures"][0]["error"] == failed["error"]
    assert json.loads(before[f"status {ids['long']}"])["counts"] == {"aborted": 2}
    assert after == before
    assert [j["job"] for j in newest] == [ids["long"]]
    assert ids["long"] in table and ids["good"] not in table and "--limit N for more" in table


def _submitted(job: Path, data: Path) -> str:
    out = p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["job"])


def _cli(*args: Any) -> str:
    """`p2psched ARGS --data-dir DATA` (DATA last in `args`) run, which must succeed."""
    *command, data = args
    out = p2psched(*command, "--data-dir", str(data))
    assert out.returncode == 0, (command, out.stderr)
    return out.stdout


def _as_shown(ids: Any, data: Path, out: Path) -> dict[str, Any]:
    """What `jobs`, `status`, `tasks` and `results` say of jobs that ended, as JSON and as
    tables, and the results folders `results` writes (under `out`)."""
    shown: dict[str, Any] = {"jobs --json": _cli("jobs", "--json", data)}
    shown["jobs"] = _cli("jobs", data)
    for job in ids:
        shown[f"status {job}"] = _cli("status", job, "--json", data)
        shown[f"status {job} (text)"] = _cli("status", job, data)
        shown[f"tasks {job}"] = _comparable(_cli("tasks", job, "--json", data))
        shown[f"tasks {job} (text)"] = _cli("tasks", job, data)
        fetched = p2psched("results", job, "--out", str(out), "--json", "--data-dir", str(data))
        assert fetched.returncode in (0, 1), fetched.stderr  # (1: not every task completed)
        summary = json.loads(fetched.stdout)
        assert summary.pop("results").startswith(str(out))
        shown[f"results {job}"] = (fetched.returncode, json.dumps(summary))
        shown[f"results {job} (files)"] = {
            f.relative_to(out).as_posix(): _comparable(f.read_text())
            for f in out.rglob("*.json")
            if f.relative_to(out).parts[0] == summary["name"]
        }
    return shown


def _comparable(text: str) -> str:
    """JSON with the progress of tasks that did not complete taken out (a worker's reports
    of how far a task it stopped had got are not kept), and where results went."""
    doc = json.loads(text)
    doc.pop("results", None)
    for t in doc.get("tasks", [doc]):
        if isinstance(t, dict) and t.get("state") not in (None, "completed"):
            t.pop("progress", None)
    return json.dumps(doc, sort_keys=True)


def test_ledger_leaves_receipts_not_paid_out_of_spent_and_lists_them(tmp_path: Path) -> None:
    """A receipt whose result disagreed with the canonical one, or that no quorum settled, is
    recorded and never spent; one awaiting its verdict is not spent yet: `ledger` says which."""
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    tasks = ["t0", "t0~2", "t1", "t1~2"]
    with Store.open(data / "state.db", own_public_key=ME.public_key) as store:
        store.write(
            [
                opened("a-1"),
                Committed(commitment("a-1", tasks, 2.0), ("w:1",), 1.0),
                *(charged("a-1", t, 2.0, "r", verdict="pending") for t in tasks),
                Judged("a-1", "t0", "agreed", 20.0),
                Judged("a-1", "t0~2", "disputed", 20.0),
                Judged("a-1", "t1", "unsettled", 20.0),
            ]
        )
    shown = json.loads(p2psched("ledger", "--json", "--data-dir", str(data)).stdout)
    (job,) = shown["jobs"]
    assert (job["spent"], job["tasks_paid"], job["pending"], job["disputed"]) == (2.0, 1, 1, 2)
    assert shown["spent"] == 2.0 and shown["peers"][0]["disputed"] == 2
    out = p2psched("ledger", "--verify", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert re.search(r"PENDING\s+DISPUTED", out.stdout)
    assert re.search(r"a-1\s+8\s+2\s+1\s+1\s+2", out.stdout)  # committed 8, spent 2
    assert "total spent 2, earned 0" in out.stdout
    not_paid = out.stdout.split("receipts not paid")[1]
    assert re.search(r"a-1\s+t0~2\s+\S+\s+2\s+disputed", not_paid)
    assert re.search(r"a-1\s+t1\s+\S+\s+2\s+unsettled", not_paid)
    assert "t1~2" not in not_paid  # still pending: not listed as unpaid
    assert "0 problem(s)" in out.stdout  # every signature still verifies
