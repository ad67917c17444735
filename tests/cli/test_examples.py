"""A newcomer's path through the CLI with real processes: `p2psched devnet up` in a fresh
folder, every job of examples/ submitted with the command `up` printed, each succeeding; a job
no worker can take said so at once with its nearest misses; and every hint printed on the way
run as printed."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.processes import EXE, running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(line: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """A command line as printed (`p2psched ...`), run from `cwd`."""
    argv = shlex.split(line)
    assert argv[0] == "p2psched", line
    return subprocess.run(
        [*EXE, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _hints(text: str) -> dict[str, str]:
    """`  submit with: p2psched ...   (...)` lines, by what they are for."""
    found = re.findall(r"^\s+(\w+) with:\s+(p2psched [^(]+?)\s*(?:\(.*\))?$", text, re.M)
    return dict(found)


@pytest.fixture(scope="module")
def devnet_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("newcomer")
    shutil.copytree(EXAMPLES, home / "examples")
    up = _run("p2psched devnet up", home)
    assert up.returncode == 0, up.stderr
    hints = _hints(up.stdout)
    try:
        yield home, hints
    finally:
        down = _run(hints["stop"], home)
        assert down.returncode == 0, down.stderr


@pytest.mark.timeout(600)
def test_every_example_runs_on_the_devnet(devnet_up: tuple[Path, dict[str, str]]) -> None:
    home, hints = devnet_up
    assert hints["submit"] == "p2psched submit examples/hello.yaml --data-dir .devnet/gate"
    for example in sorted((home / "examples").glob("*.yaml")):
        # Each as its own comment says to submit it: the devnet's form, which works as printed.
        (line,) = re.findall(r"^#\s+(p2psched submit .+)$", example.read_text(), re.M)
        assert line == hints["submit"].replace("hello.yaml", example.name), example.name
        done = _run(line + " --json", home)
        assert done.returncode == 0, (example.name, done.stdout, done.stderr)
        summary = json.loads(done.stdout)
        assert summary["completed"] == summary["total"] > 0, example.name
    # The job ran on the gate's node, so what watches it shows the job.
    top = _run(hints["watch"] + " --once", home)
    assert top.returncode == 0, top.stderr
    assert "wc-sweep" in top.stdout or "llm-summaries" in top.stdout or "sleep" in top.stdout


@pytest.mark.timeout(300)
def test_a_job_no_worker_can_take_says_why_at_once(
    devnet_up: tuple[Path, dict[str, str]],
) -> None:
    home, hints = devnet_up
    (home / "h100.yaml").write_text(
        "name: h100\ndriver: echo\nresources: {gpu: H100}\ntasks: [{input: {a: 1}}]\n"
    )
    (home / "cheap.yaml").write_text(
        "name: cheap\ndriver: command\nbudget: {max_price_per_task: 0.0001}\nwait_for_worker: 5s\n"
        "tasks: [{input: {program: wc, params: {}, stdin: x}}]\n"
    )
    submit = hints["submit"].replace("examples/hello.yaml", "h100.yaml")
    detached = _run(submit + " --detach", home)
    assert detached.returncode == 0, detached.stderr
    assert "until a worker that meets their need appears" in detached.stdout
    assert "no worker advertises gpu=H100" in detached.stderr
    # The hint to follow it works as printed.
    follow = re.search(r"follow it with `([^`]+)`", detached.stdout)
    assert follow is not None, detached.stdout
    status = _run(follow.group(1), home)
    assert status.returncode == 0, status.stderr
    assert "no worker advertises gpu=H100" in status.stdout
    # Waited for to the end, the task fails with the nearest misses.
    cheap = _run(hints["submit"].replace("examples/hello.yaml", "cheap.yaml") + " --json", home)
    assert cheap.returncode == 1
    assert "3 workers have driver=command but the nearest asks 0.0005 > max_price 0.0001" in (
        cheap.stderr
    )
    failure = json.loads(cheap.stdout)["failures"][0]
    assert "the nearest asks 0.0005 > max_price 0.0001" in failure["error"]


@pytest.mark.timeout(300)
def test_the_hints_a_gate_and_a_node_print_work_as_printed(
    devnet_up: tuple[Path, dict[str, str]],
) -> None:
    home, _ = devnet_up
    said = (home / ".devnet" / "gate.log").read_text()
    relay = re.search(r"its relay: (p2psched .+)$", said, re.M)
    assert relay is not None, said
    status = _run(relay.group(1), home)
    assert status.returncode == 0 and "relay on" in status.stdout, status.stderr
    join = re.search(r"workers join with: (p2psched worker join \S+ \S+)", said)
    assert join is not None, said
    argv = shlex.split(join.group(1))[1:]  # (a worker on this machine needs a data dir)
    with running(*argv, data=home / "my worker") as (_, joined):
        (worker,) = re.findall(r"^worker ([0-9a-f]+) joined through", joined, re.M)
        deadline = time.monotonic() + 30
        while worker not in _run("p2psched workers --data-dir .devnet/gate --json", home).stdout:
            assert time.monotonic() < deadline, "the worker that joined as printed is not listed"
            time.sleep(0.5)
    gate = json.loads((home / ".devnet" / "devnet.json").read_text())["gate"]
    with running("node", "--gate", gate, data=home / "my node") as (_, headline):
        submit = re.search(r"submit jobs to it with: (p2psched .+?);", headline)
        assert submit is not None, headline
        line = submit.group(1).replace("JOB.yaml", "examples/hello.yaml")
        assert "--data-dir" in line
        done = _run(line + " --json", home)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["completed"] == 6


def test_each_example_shows_a_submit_that_works_when_copied() -> None:
    """An example's comment shows how to submit it; a bare `p2psched submit examples/X.yaml`
    fails when copied (no node runs on the default data dir, and no gate is named), so each one
    shown names where it goes: `--data-dir` (a devnet's gate) or `--gate`."""
    for example in sorted(EXAMPLES.glob("*.yaml")):
        shown = re.findall(r"^#\s+(p2psched submit .*)$", example.read_text(), re.M)
        assert shown, f"{example.name} shows no submit command"
        for line in shown:
            assert "--data-dir" in line or "--gate" in line, f"{example.name}: {line}"
