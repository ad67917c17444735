"""`p2psched/home.py`'s lock on a data directory, with real processes: a second node, worker
or submit on a directory a running process holds is refused at once, naming that process, and
takes nothing of the first one's away; a holder killed outright leaves the directory free."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from p2psched.api.client import ControlClient
from p2psched.home import LOCK_FILE, DataDirInUse, running_in
from tests.harness.processes import gate_and_worker, p2psched, process, write_job


def _workers(gate: str, tmp_path: Path) -> set[str]:
    out = p2psched("workers", "--gate", gate, "--json", "--data-dir", str(tmp_path / "asker"))
    assert out.returncode == 0, out.stderr
    return {json.loads(line)["node_id"] for line in out.stdout.splitlines()}


def test_a_second_process_on_a_data_dir_is_refused_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    config = '[worker]\ndrivers = ["echo"]\n'
    home = tmp_path / "w"
    with gate_and_worker(tmp_path, config) as (gate, _, node_id, first):
        worker = node_id.hex()
        assert worker in _workers(gate, tmp_path)
        join = ("worker", "join", "--gate", gate, "--config", str(tmp_path / "worker.toml"))
        job = write_job(tmp_path / "j.yaml", "name: j\ntasks: [{input: 1}]\n")
        (home / "api.json").rename(home / "api.json.away")  # so that submit runs its own node
        results = ("--results", str(tmp_path / "results"))
        submit = p2psched("submit", str(job), "--gate", gate, *results, "--data-dir", str(home))
        (home / "api.json.away").rename(home / "api.json")
        for second in (
            p2psched(*join, "--data-dir", str(home), timeout=60),
            p2psched("node", "--gate", gate, "--data-dir", str(home), timeout=60),
            submit,
        ):
            assert second.returncode == 2, second.stdout + second.stderr
            assert f"is in use by pid {first.pid} (a worker)" in second.stderr
            assert "Traceback" not in second.stderr
        # The first one still serves: the CLI finds it, and its ad was not withdrawn.
        assert first.poll() is None
        client = ControlClient.find(home)
        assert client is not None
        with client:
            assert client.get("/v1/jobs") is not None
        assert worker in _workers(gate, tmp_path)

        # Killed outright, it holds nothing: a new worker starts on the directory.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        with process(*join, "--data-dir", str(home), home=tmp_path) as again:
            assert again.stdout is not None and again.stderr is not None
            line = again.stdout.readline()
            assert line == f"worker {worker} joined through {gate}\n", line + again.stderr.read()


def test_the_lock_is_refused_in_process_too_and_names_the_holder(tmp_path: Path) -> None:
    with running_in(tmp_path, "a test"):
        try:
            with running_in(tmp_path, "another"):
                raise AssertionError("a second hold on one data dir was granted")
        except DataDirInUse as e:
            assert "pid" in str(e) and "(a test)" in str(e)
    with running_in(tmp_path, "a later one"):  # let go on leaving
        assert "(a later one)" in (tmp_path / LOCK_FILE).read_text()
