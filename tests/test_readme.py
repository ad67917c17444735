"""The README's commands, walked as a newcomer walks them: the docs are tested, so they stay true.

Every ```sh block that holds a `p2psched` command carries a mark, an HTML comment on the line
before it (invisible where the README is shown):

- `<!-- walk -->`: its commands run as written, one at a time, in the order of the file, as one
  shell session (a variable one command sets, a later one may use), with bash (`set -euo
  pipefail`), each under a timeout, from a fresh folder where `examples` is a link to the
  checkout's, with this venv first on PATH and `P2PSCHED_HOME` in that folder (so nothing
  reaches the real `~/.p2psched`). Real processes, on loopback. A command that exits non-zero
  fails the walk, naming it; afterwards what the path promised is checked (results written,
  the devnet gone, no process left behind).
- `<!-- walk: skip (why) -->`: not run (it installs, runs a node until stopped, or needs hosts
  of its own); each of its `p2psched` commands is still read by the CLI's own parser, so a
  command or option the CLI no longer has fails `test_a_skipped_block_names_what_the_cli_has`.

The quick start's block is the exception (it must stay the file's first, unmarked): its first
line's last command, `p2psched devnet demo`, runs in a folder of its own; the installs before
it are this venv's own set-up, and the second line is CI's (tests/test_upkeep.py ties it to
`.ci/run`). A block with no `p2psched` command (the benchmarks') needs no mark.

Whatever happens, the walk's devnet is stopped (`devnet down`) and every process still running
in the walk's folder is killed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2psched import devnet
from p2psched.cli.app import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARK = re.compile(r"<!-- walk(?:: skip \((?P<why>[^)]+)\))? -->")
COMMAND_TIMEOUT_S = 60.0
# Bash runs one README command, then leaves its environment for the next one (`set -a`: what it
# assigns is exported), as a shell session would.
SESSION = 'set -euo pipefail\nset -a\n{command}\nenv -0 > "$WALK_ENV"\n'


@dataclass(frozen=True, slots=True)
class Block:
    """A ```sh block of the README: where it starts (1-based), its mark, its commands."""

    line: int
    mark: str | None  # "walk", "skip", or None (unmarked)
    why: str
    commands: tuple[str, ...]

    @property
    def shows_p2psched(self) -> bool:
        return any(re.search(r"(^|&& )p2psched ", c) for c in self.commands)


def _commands(body: list[str]) -> tuple[str, ...]:
    """The block's commands: continued lines joined, blank and comment-only lines left out."""
    commands: list[str] = []
    pending = ""
    for line in body:
        if pending:
            line = pending + " " + line.strip()
            pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return tuple(commands)


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        if lines[i] == "```sh":
            end = lines.index("```", i + 1)
            mark = MARK.fullmatch(lines[i - 1].strip()) if i else None
            kind = None if mark is None else "skip" if mark["why"] else "walk"
            why = mark["why"] if mark and mark["why"] else ""
            found.append(Block(i + 1, kind, why, _commands(lines[i + 1 : end])))
            i = end
        i += 1
    return found


BLOCKS = readme_blocks()
QUICK_START = BLOCKS[0]
SKIPPED = [b for b in BLOCKS if b.mark == "skip"]


def _p2psched_argvs(command: str) -> Iterator[list[str]]:
    """Each `p2psched ...` of a command line (several when joined by &&), split as a shell
    would, its trailing comment left out."""
    words = shlex.split(command, comments=True)
    segment: list[str] = []
    for word in [*words, "&&"]:
        if word == "&&":
            if segment and segment[0] == "p2psched":
                yield segment[1:]
            segment = []
        else:
            segment.append(word)


def _parse_error(argv: list[str]) -> str | None:
    """What the CLI's parser says of `argv`, if it refuses it."""
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            if e.code:
                lines = said.getvalue().strip().splitlines()
                return lines[-1] if lines else f"exit status {e.code}"
    return None


# --- the marks ---


def test_every_block_that_shows_a_command_is_walked_or_marked_skipped() -> None:
    assert QUICK_START.line <= 6 and QUICK_START.mark is None  # the file's first thing
    unmarked = [b.line for b in BLOCKS[1:] if b.shows_p2psched and b.mark is None]
    assert not unmarked, f"README.md: ```sh blocks at lines {unmarked} need a walk mark"


def test_the_walk_covers_the_newcomers_path() -> None:
    walked = " ; ".join(c for b in BLOCKS if b.mark == "walk" for c in b.commands)
    for needed in (
        "p2psched devnet up ",
        "p2psched submit examples/",
        "p2psched jobs ",
        "p2psched status ",
        "p2psched tasks ",
        "p2psched results ",
        "p2psched devnet down ",
    ):
        assert needed in walked, f"the README's walk no longer runs {needed.strip()!r}"
    assert walked.index("devnet up") < walked.index("submit") < walked.index("devnet down")


@pytest.mark.parametrize("block", SKIPPED, ids=[f"line{b.line}" for b in SKIPPED])
def test_a_skipped_block_names_what_the_cli_has(block: Block) -> None:
    argvs = [argv for c in block.commands for argv in _p2psched_argvs(c)]
    assert argvs, f"README.md line {block.line}: a skipped block with no p2psched command"
    for argv in argvs:
        error = _parse_error(argv)
        assert error is None, f"README.md line {block.line}: p2psched {shlex.join(argv)}: {error}"


def test_the_quick_start_is_installs_then_the_demo() -> None:
    first = QUICK_START.commands[0].split(" && ")
    assert first[-1] == "p2psched devnet demo"
    assert all(s.startswith(("python3 -m venv", ". .venv/", "pip install")) for s in first[:-1])
    assert _parse_error(["devnet", "demo"]) is None


def test_links_stay_inside_the_repository() -> None:
    for doc in (README, ROOT / "docs" / "architecture.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: link to {target}"


def test_help_texts_name_readme_sections_that_exist() -> None:
    headings = {
        line.lstrip("#").strip()
        for line in README.read_text().splitlines()
        if line.startswith(("## ", "### "))
    }
    for source in sorted((ROOT / "p2psched").rglob("*.py")):
        text = " ".join(source.read_text().split())  # (a reference may wrap)
        for named in re.findall(r"README: ([^)\"']+)\)", text):
            assert named.strip() in headings, f"{source.name}: (README: {named}) is no section"


# --- the walk ---


def _procs_in(folder: Path) -> list[int]:
    """The processes whose working directory is in `folder`: those the walk started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                    found.append(int(entry.name))
    return found


def _kill_left_in(folder: Path) -> list[int]:
    """Kill what still runs in `folder`; the pids that were left."""
    left = _procs_in(folder)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["P2PSCHED_HOME"] = str(home / ".p2psched")
    env["WALK_ENV"] = str(home / ".walk-env")
    env.pop("PYTHONPATH", None)  # as a newcomer has it: the venv's p2psched, nothing else
    return env


def _run(command: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """Run one README command as a shell session would, in its own process group, killed at
    the timeout; the session's environment after it."""
    proc = subprocess.Popen(
        ["bash", "-c", SESSION.format(command=command)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"README command took over {COMMAND_TIMEOUT_S:g} s: {command}\n{out}\n{err}")
    assert proc.returncode == 0, (
        f"README command failed (exit status {proc.returncode}): {command}\n"
        f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    )
    saved = Path(env["WALK_ENV"]).read_bytes().split(b"\0")
    return dict(
        kv.decode().split("=", 1) for kv in saved if b"=" in kv and not kv.startswith(b"BASH_FUNC")
    )


def _newcomers_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "examples").symlink_to(ROOT / "examples")
    return folder


@pytest.mark.timeout(180)
def test_the_readme_walks(tmp_path: Path) -> None:
    home = _newcomers_folder(tmp_path, "walk")
    env = _environment(home)
    walked = [c for b in BLOCKS if b.mark == "walk" for c in b.commands]
    started = time.monotonic()
    try:
        for command in walked:
            env = _run(command, home, env)
    finally:
        if (home / ".devnet" / devnet.STATE_FILE).exists():
            devnet.down(home / ".devnet")  # the walk failed before its own `devnet down`
        left = _kill_left_in(home)
    assert not left, f"processes left running after the walk: {left}"
    assert not (home / ".devnet" / devnet.STATE_FILE).exists()
    first = json.loads((home / "results" / "hello" / "summary.json").read_text())
    assert first["completed"] == first["total"] == 6
    fetched = json.loads((home / "results" / "hello-2" / "summary.json").read_text())
    assert fetched["job"] == env["JOB"] and fetched["completed"] == 6
    assert (home / "node-a" / "identity.key").exists()
    print(f"the README's walk: {len(walked)} commands in {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(120)
def test_the_quick_start_demo_runs(tmp_path: Path) -> None:
    home = _newcomers_folder(tmp_path, "demo")
    demo = QUICK_START.commands[0].split(" && ")[-1]
    try:
        _run(demo, home, _environment(home))
    finally:
        left = _kill_left_in(home)
    assert not left, f"processes left running after the demo: {left}"
    summary = json.loads((home / "results" / "hello" / "summary.json").read_text())
    assert summary["completed"] == summary["total"] == 6


def toml_blocks(text: str) -> list[str]:
    """The README's ```toml blocks, in order."""
    return re.findall(r"^```toml\n(.*?)^```$", text, flags=re.M | re.S)


def with_its_secrets(block: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an operator has in place for a worker's config block: the environment variables
    and the key files (mode 0600) its http endpoints name."""
    endpoints = tomllib.loads(block).get("drivers", {}).get("http", {}).get("endpoints", {})
    for endpoint in endpoints.values():
        if not isinstance(endpoint, dict):
            continue
        for variable in [endpoint.get("api_key_env"), *endpoint.get("headers_env", {}).values()]:
            if variable is not None:
                monkeypatch.setenv(variable, "sk-readme-example")
        if (name := endpoint.get("api_key_file")) is not None:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("sk-readme-example\n")
            (folder / name).chmod(0o600)


def test_every_config_block_loads_as_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each TOML block is a file its reader takes as it stands: a worker's config (`[worker]`,
    its `[dht]`), a gate's (`[relay]`, `[dht]`), any node's (`[server]`, `[database]`,
    `[models.NAME]`); no placeholder a copy would be refused for (the secrets its endpoints
    name in place, as on the operator's machine)."""
    from p2psched.node.config import load_node_config
    from p2psched.worker.config import load_config

    blocks = toml_blocks(README.read_text())
    assert len(blocks) >= 4, "the README's config examples went missing"
    for i, block in enumerate(blocks):
        path = tmp_path / f"block-{i}.toml"
        path.write_text(block)
        first = re.search(r"^\[([^\]]+)\]", block, flags=re.M)
        assert first is not None, block
        if first[1] == "worker":
            with_its_secrets(block, tmp_path, monkeypatch)
            load_config(path)
        elif first[1] in ("relay", "dht"):
            load_node_config(path, "gate")
        elif first[1] in ("server", "database") or first[1].startswith("models."):
            load_node_config(path, "node")
        else:
            raise AssertionError(f"a config block of no known reader: [{first[1]}]")
