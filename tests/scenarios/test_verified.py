"""Verified results as a user runs them, every node its own process on loopback: a job with
`verify:` over honest workers and liars keeps only right results and pays no disputed one, and
`p2psched verify JOB` re-checks it from the store (and fails once a kept output is edited); a
job's compare command judges copies whose bytes differ."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgpack
import trio
import yaml

from p2psched.node.status import NodeFacade
from p2psched.worker.config import CommandDriverConfig, WorkerConfig
from tests.harness.network import network
from tests.harness.processes import gate_process, p2psched, running_node, worker_of

SQUARE = "import sys; n = int(sys.stdin.read()); print(n * n)"
WRONG_ON_THIRDS = "import sys; n = int(sys.stdin.read()); print(n * n + (n % 3 == 0))"
TASKS = 12
CLAIMED_S = 3600.0  # what the false-durations worker says each task took


def command_worker(program: str, price: float) -> str:
    """A worker's config: the command driver's one program, `square`, run by python3."""
    return (
        f'[worker]\nslots = 2\nmin_price = {price}\ndrivers = ["command"]\n'
        "[drivers.command.programs.square]\n"
        f"argv = {json.dumps(['/usr/bin/python3', '-c', program])}\n"
    )


def squares_job(folder: Path, verify: str) -> Path:
    path = folder / "squares.yaml"
    path.write_text(
        "name: squares\ndriver: command\ntimeout: 30s\nretries: 2\n"
        f"verify: {verify}\n"
        'template:\n  input: {program: square, stdin: "{i}\\n"}\n'
        f"matrix:\n  i: {list(range(TASKS))}\n"
    )
    return path


@contextmanager
def false_durations(gate: str, price: float) -> Iterator[bytes]:
    """A worker process whose results are right and whose receipts claim `CLAIMED_S`: its id."""
    args = [sys.executable, "-m", "tests.harness.false_durations", gate, str(price)]
    with subprocess.Popen([*args, str(CLAIMED_S)], stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None
            yield bytes.fromhex(p.stdout.readline().strip())
        finally:
            p.kill()
            p.wait(timeout=10)


def api(data: Path, *args: str) -> Any:
    """`p2psched ARGS --json` against the node on `data`, its answer."""
    done = p2psched(*args, "--json", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_liars_are_outvoted_unpaid_and_found_out_by_verify(tmp_path: Path) -> None:
    with ExitStack() as stack:
        gate = stack.enter_context(gate_process(tmp_path / "gate"))
        honest = [
            stack.enter_context(
                worker_of(gate, tmp_path / f"h{i}", config=command_worker(SQUARE, 0.01))
            )[1]
            for i in range(2)
        ]
        _, liar, _ = stack.enter_context(
            worker_of(gate, tmp_path / "liar", config=command_worker(WRONG_ON_THIRDS, 0.005))
        )
        slow_talker = stack.enter_context(false_durations(gate, 0.008))
        node = stack.enter_context(running_node(gate, tmp_path / "me"))
        job = squares_job(tmp_path, "{replicas: 2, quorum: 2}")
        out = tmp_path / "out"
        done = p2psched("submit", str(job), "--results", str(out), "--data-dir", str(node))
        summary = json.loads((out / "squares" / "summary.json").read_text())
        assert done.returncode == 0 and summary["completed"] == TASKS, (summary, done.stderr)
        cost = summary["verification"]
        said = (
            f"verification: {cost['copies']} copies run beyond one per task, "
            f"{cost['disputed']} result(s) disputed (not paid), 0 task(s) with no quorum"
        )
        assert said in done.stdout, done.stdout
        job_id = summary["job"]

        # Every result the job keeps is right, one per task.
        kept = sorted((out / "squares").glob("0*[0-9].json"))
        assert len(kept) == TASKS
        for path in kept:
            r = json.loads(path.read_text())
            assert r["output"]["stdout"] == f"{r['index'] ** 2}\n", r

        # The liar's wrong results were disputed, each outvoted; none of them is paid.
        tasks = api(node, "tasks", job_id)["tasks"]
        by_state: dict[str, list[dict[str, Any]]] = {}
        for t in tasks:
            by_state.setdefault(t["state"], []).append(t)
        disputed = by_state.get("disputed", [])
        assert disputed, tasks
        assert {t["worker"] for t in disputed} == {liar.hex()}
        assert cost["disputed"] == len(disputed) and cost["no_quorum"] == 0
        assert cost["copies"] == len(tasks) - TASKS
        paid = by_state["completed"]
        assert {t["worker"] for t in paid} <= {
            *map(bytes.hex, honest),
            slow_talker.hex(),
            liar.hex(),
        }
        prices = {liar.hex(): 0.005, slow_talker.hex(): 0.008}
        spent = sum(prices.get(t["worker"], 0.01) for t in paid)
        status = api(node, "status", job_id)
        assert abs(status["spent"] - spent) < 1e-9, (status, paid)
        assert abs(summary["spent"] - spent) < 1e-9
        assert said in p2psched("status", job_id, "--data-dir", str(node)).stdout
        checked = p2psched("ledger", "--json", "--verify", "--data-dir", str(node))
        ledger = json.loads(checked.stdout.splitlines()[0])  # (then the line --verify adds)
        (paid_for,) = [j for j in ledger["jobs"] if j["job"] == job_id]
        assert abs(paid_for["spent"] - spent) < 1e-9 and paid_for["tasks_paid"] == len(paid)
        assert sorted(d["task"] for d in ledger["disputed"] if d["verdict"] == "disputed") == (
            sorted(t["task"] for t in disputed)
        )
        assert ledger["problems"] == []

        # The liars rank last in `workers`: the one that lied about results below the one that
        # lied about run times, whose claims did not become its run times (the scheduler
        # measured them: its record counts each claim far from them).
        ran = [t["task"] for t in paid if t["worker"] == slow_talker.hex()]
        assert ran, tasks
        ranked = [json.loads(line) for line in p2psched(
            "workers", "--json", "--data-dir", str(node)
        ).stdout.splitlines()]  # fmt: skip
        order = [ad["node_id"] for ad in ranked]
        assert order[-2:] == [slow_talker.hex(), liar.hex()], ranked
        assert sorted(order[:-2]) == sorted(map(bytes.hex, honest))
        record = {ad["node_id"]: ad["reputation"] for ad in ranked}
        assert record[liar.hex()]["disputed"] == len(disputed)
        assert record[slow_talker.hex()]["duration_mismatches"] >= len(ran)
        assert record[slow_talker.hex()]["disputed"] == 0

        # `p2psched verify` re-checks the job from the store: all is well ...
        done = p2psched("verify", job_id, "--data-dir", str(node))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"verified {TASKS} task(s): {TASKS} result(s) kept, {len(disputed)} disputed" in (
            done.stdout
        )
        assert "0 problem(s)" in done.stdout

    # Each of the false-durations worker's tasks' history gives the run time measured.
    store = tmp_path / "me" / "state.db"
    with sqlite3.connect(store) as db:
        reasons = [
            r
            for (r,) in db.execute(
                "SELECT reason FROM transitions WHERE job = ? AND task IN "
                f"({','.join('?' * len(ran))})",
                (job_id, *ran),
            )
        ]
    measured = [
        float(m.group(1)) for r in reasons if (m := re.search(r"ran it in (\S+) s;", r or ""))
    ]
    assert len(measured) == len(ran) and max(measured) < CLAIMED_S / 10, reasons

    # ... and `p2psched verify` fails, naming each, once a kept output is edited on disk and
    # a receipt is rewritten (offline: the node stopped).
    first, last = sorted(t["task"] for t in paid)[:: len(paid) - 1]
    with sqlite3.connect(store) as db:
        where = "WHERE job = ? AND task = ?"
        (packed,) = db.execute(f"SELECT output FROM results {where}", (job_id, first)).fetchone()
        forged = packed.replace(b"\n", b"1\n")
        db.execute(f"UPDATE results SET output = ? {where}", (forged, job_id, first))
        (signed,) = db.execute(f"SELECT receipt FROM results {where}", (job_id, last)).fetchone()
        receipt = msgpack.unpackb(signed)
        receipt["duration"] = 1.0
        db.execute(
            f"UPDATE results SET receipt = ? {where}", (msgpack.packb(receipt), job_id, last)
        )
    done = p2psched("verify", job_id, "--data-dir", str(tmp_path / "me"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"problem: {first}: its stored output" in done.stderr
    assert f"problem: {last}: its receipt's signature does not verify" in done.stderr
    assert "2 problem(s)" in done.stdout


# Each run salts its answer, so no two copies' results are the same bytes: only the job's judge
# can say two agree (on the number before the salt).
SALTED = "import random, sys; n = int(sys.stdin.read()); print(n * n, random.random())"
SALTED_WRONG = "import random, sys; n = int(sys.stdin.read()); print(n * n + 1, random.random())"
JUDGE = """import json, sys
a, b = (json.load(open(p))["stdout"].split()[0] for p in sys.argv[-2:])
with open(sys.argv[1], "a") as log:
    log.write(f"{a} {b}\\n")
sys.exit(0 if a == b else 1)
"""


async def test_a_compare_command_judges_copies_on_the_scheduler(tmp_path: Path) -> None:
    judge, judged = tmp_path / "judge.py", tmp_path / "judged.log"
    judge.write_text(JUDGE)
    configs = [
        WorkerConfig(slots=2, drivers=("command",), command_driver=CommandDriverConfig(
            programs={"square": {"argv": ["/usr/bin/python3", "-c", program]}}
        ))
        for program in (SALTED, SALTED, SALTED_WRONG)
    ]  # fmt: skip
    async with network(tmp_path, configs) as (scheduler, workers):
        command = [sys.executable, str(judge), str(judged)]
        spec = yaml.safe_load(squares_job(tmp_path, json.dumps({
            "replicas": 2, "quorum": 2, "compare": "command", "command": command
        })).read_text())  # fmt: skip
        accepted = NodeFacade(scheduler).submit(spec)
        assert accepted.tasks == TASKS  # tasks, not their copies (what progress counts)
        job = scheduler.jobs.jobs[accepted.job]
        with trio.fail_after(120):
            await job.done.wait()
        status = job.status(trio.current_time())
        assert status["completed"] == TASKS, status
        liar = workers[2].node_id
        for i in range(TASKS):
            kept = job.result_view(f"{job.job_id}/{i}")
            assert kept["output"]["stdout"].split()[0] == str(i * i), kept
        disputed = [t for t in job.run.tasks.values() if t.state.value == "disputed"]
        assert disputed and all(t.receipt and t.receipt.worker == liar for t in disputed)
        assert status["verification"]["disputed"] == len(disputed)
        asked = len(judged.read_text().splitlines())
        assert asked >= TASKS  # each task's copies were told apart by the judge alone

        # `p2psched verify` runs the judge again on what the store kept.
        done = await trio.to_thread.run_sync(
            lambda: p2psched("verify", job.job_id, "--json", "--data-dir", str(scheduler.data_dir))
        )
        assert done.returncode == 0, done.stdout + done.stderr
        checked = json.loads(done.stdout)
        assert checked["rule"].endswith(f"compare by {' '.join(command)}")
        assert checked["problems"] == [] and len(checked["tasks"]) == TASKS
        assert sum(t["disputed"] for t in checked["tasks"]) == len(disputed)
        assert len(judged.read_text().splitlines()) > asked
