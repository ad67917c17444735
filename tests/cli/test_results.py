"""`p2psched results JOB` against a real node: a detached job's results and receipts fetched
as `submit` writes them; a job whose name ran before gets a folder of its own; and the commands
that only look leave no `~/.p2psched` behind, nor does `submit --gate` without --data-dir."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from p2psched import devnet
from p2psched.cli.submit import FOLDERS_PER_NAME, ResultsFolder, SubmitError
from tests.harness.processes import matrix_job, p2psched, running_node


def files_of(folder: Path) -> dict[str, dict]:
    """Each result and receipt `folder` holds, by file name (the summary, which tells when it
    was written, left out)."""
    return {p.name: json.loads(p.read_text()) for p in folder.iterdir() if p.name != "summary.json"}


def says(text: str, words: str) -> bool:
    """Whether `text` says `words`, however a table wrapped them across lines."""
    return "".join(words.split()) in "".join(text.split())


def wait_done(job_id: str, node: Path) -> None:
    deadline = time.monotonic() + 60
    while (
        json.loads(p2psched("status", job_id, "--json", "--data-dir", str(node)).stdout)["state"]
        == "running"
    ):
        assert time.monotonic() < deadline, f"{job_id} did not finish"
        time.sleep(0.2)


def detached(job: Path, node: Path) -> str:
    out = p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(node))
    assert out.returncode == 0, out.stderr
    job_id: str = json.loads(out.stdout)["job"]
    wait_done(job_id, node)
    return job_id


@pytest.mark.parametrize("net", [2], indirect=True)
def test_results_of_a_detached_job_are_the_files_submit_writes(node: Path, tmp_path: Path) -> None:
    job = matrix_job(tmp_path, "echoes", "echo", "{n: '{i}'}", 6)
    followed = tmp_path / "followed"
    out = p2psched(
        "submit", str(job), "--json", "--results", str(followed), "--data-dir", str(node)
    )
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)["job"]

    fetched = tmp_path / "fetched"
    out = p2psched("results", first, "--out", str(fetched), "--data-dir", str(node))
    assert out.returncode == 0, out.stderr
    assert says(out.stdout, f"results in {fetched / 'echoes'}")
    assert files_of(fetched / "echoes") == files_of(followed / "echoes")
    assert len(files_of(fetched / "echoes")) == 12  # 6 results, 6 receipts
    summary = json.loads((fetched / "echoes" / "summary.json").read_text())
    assert summary["job"] == first and summary["completed"] == 6

    # The same name again, detached: its results go beside the first run's, not over them.
    second = detached(job, node)
    before = files_of(followed / "echoes")
    out = p2psched("results", second, "--out", str(followed), "--json", "--data-dir", str(node))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"] == str(followed / "echoes-2")
    assert files_of(followed / "echoes") == before
    assert {r["task"].rpartition("/")[0] for r in files_of(followed / "echoes-2").values()} == {
        second
    }
    # A job fetched again rewrites its own folder, and no other.
    out = p2psched("results", second, "--out", str(followed), "--json", "--data-dir", str(node))
    assert json.loads(out.stdout)["results"] == str(followed / "echoes-2")
    assert not (followed / "echoes-3").exists()

    # `submit` of the same name keeps both as well, and says where the new one went.
    out = p2psched("submit", str(job), "--results", str(followed), "--data-dir", str(node))
    assert out.returncode == 0, out.stderr
    assert says(out.stdout, f"results in {followed / 'echoes-3'}")
    assert files_of(followed / "echoes") == before

    missing = p2psched("results", "nope-1", "--data-dir", str(node))
    assert missing.returncode == 2 and "no job 'nope-1'" in missing.stderr


def test_a_name_run_too_often_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    for n in range(1, FOLDERS_PER_NAME + 1):
        taken = tmp_path / ("j" if n == 1 else f"j-{n}")
        taken.mkdir()
        (taken / "000000.json").write_text("{}")
    with pytest.raises(SubmitError, match="move some away"):
        ResultsFolder(tmp_path, "j")


@pytest.mark.parametrize("net", [1], indirect=True)
def test_commands_that_only_look_leave_no_home_behind(net: devnet.Devnet, tmp_path: Path) -> None:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "P2PSCHED_HOME"}
    env |= {"HOME": str(home), "TMPDIR": str(tmp)}
    looks = (
        ("workers", "--gate", net.gate),
        ("dht", "get", "some-key", "--bootstrap", net.gate),
        ("status", "j-1"),
        ("jobs",),
        ("tasks", "j-1"),
        ("results", "j-1"),
        ("ledger",),
    )
    for command in looks:
        out = p2psched(*command, env=env, cwd=home)
        assert "Traceback" not in out.stderr, (command, out.stderr)
        assert not (home / ".p2psched").exists(), command
    assert "0 worker(s) matching" not in p2psched(*looks[0], env=env, cwd=home).stdout

    # A job run from here through the gate: its node's state lives in TMPDIR while it runs and
    # is gone after; the results are where the summary says.
    job = matrix_job(tmp_path, "hello", "echo", "{n: '{i}'}", 2)
    out = p2psched("submit", str(job), "--gate", net.gate, env=env, cwd=home)
    assert out.returncode == 0, out.stderr
    assert not (home / ".p2psched").exists()
    assert list(tmp.iterdir()) == []
    assert "now removed; pass --data-dir" in out.stderr
    assert says(out.stdout, "results in results/hello")
    assert len(list((home / "results" / "hello").glob("*.receipt.json"))) == 2


@pytest.mark.parametrize("net", [2], indirect=True)
def test_results_wait_for_a_running_job_to_end(node: Path, tmp_path: Path) -> None:
    job = matrix_job(tmp_path, "naps", "sleep", "{seconds: 6}", 2)  # one a worker, at once
    out = p2psched("submit", str(job), "--detach", "--json", "--data-dir", str(node))
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["job"]

    # At once: what has settled (nothing yet: each task sleeps 6 s), and the job said running.
    early = p2psched("results", job_id, "--out", str(tmp_path / "early"), "--data-dir", str(node))
    assert early.returncode != 0
    assert says(early.stdout, f"job {job_id} is still running") and "--wait" in early.stdout

    waited = p2psched(
        "results", job_id, "--wait", "--out", str(tmp_path / "late"), "--data-dir", str(node)
    )
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "still running" not in waited.stdout
    summary = json.loads((tmp_path / "late" / "naps" / "summary.json").read_text())
    assert summary["completed"] == 2
    assert len(files_of(tmp_path / "late" / "naps")) == 4  # 2 results, 2 receipts


@pytest.mark.parametrize("net", [1], indirect=True)
def test_a_finished_job_is_still_listed_and_fetched_after_its_node_restarts(
    net: devnet.Devnet, tmp_path: Path
) -> None:
    """A detached job that finished before its node stopped stays in the data dir's store;
    the next node there still lists it (`jobs`), says its state (`status`) and hands out its
    results (`results`), as `history` already does for its tasks."""
    me = tmp_path / "me"
    job = matrix_job(tmp_path, "echoes", "echo", "{n: '{i}'}", 2)
    with running_node(net.gate, me):
        job_id = detached(job, me)
    with running_node(net.gate, me):
        listed = json.loads(p2psched("jobs", "--json", "--data-dir", str(me)).stdout)["jobs"]
        status = p2psched("status", job_id, "--data-dir", str(me))
        fetched = p2psched("results", job_id, "--out", str(tmp_path / "r"), "--data-dir", str(me))
    assert job_id in [j["job"] for j in listed], listed
    assert status.returncode == 0 and "completed" in status.stdout, status.stderr
    assert fetched.returncode == 0, fetched.stderr
    assert len(files_of(tmp_path / "r" / "echoes")) == 4  # two results, two receipts
