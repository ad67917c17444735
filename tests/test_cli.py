"""The command line, run as a user would: real processes, real data directories, real ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.processes import EXE, free_udp_port, run_at_home


def test_init_then_id(tmp_path: Path) -> None:
    made = run_at_home("init", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert made.returncode == 0
    node_id = re.search(r"identity ([0-9a-f]{64})", made.stdout).group(1)  # type: ignore[union-attr]
    shown = run_at_home("id", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert shown.stdout.strip() == node_id
    again = run_at_home("init", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_missing_and_corrupt_keys_are_clear_errors(tmp_path: Path) -> None:
    missing = run_at_home("id", "--data-dir", str(tmp_path / "nowhere"), home=tmp_path)
    assert missing.returncode == 2
    assert "identity.key is missing" in missing.stderr and "p2psched init" in missing.stderr
    assert "Traceback" not in missing.stderr
    run_at_home("init", "--data-dir", str(tmp_path / "b"), home=tmp_path)
    (tmp_path / "b" / "identity.key").write_bytes(b"p2psched-ed25519-v1\nnot hex\n")
    corrupt = run_at_home(
        "dht", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "b"), home=tmp_path
    )
    assert (
        corrupt.returncode == 2
        and "corrupt" in corrupt.stderr
        and "Traceback" not in corrupt.stderr
    )


def test_bad_arguments_name_what_is_wrong(tmp_path: Path) -> None:
    bad = run_at_home(
        "dht", "serve", "--listen", "nonsense", "--data-dir", str(tmp_path / "c"), home=tmp_path
    )
    assert bad.returncode == 2 and "--listen 'nonsense' is not HOST:PORT" in bad.stderr
    big = run_at_home(
        "dht",
        "put",
        "k",
        "x" * 5000,
        "--bootstrap",
        "127.0.0.1:9",
        "--data-dir",
        str(tmp_path / "d"),
        home=tmp_path,
    )
    assert big.returncode == 2 and "at most 4096" in big.stderr
    nobody = run_at_home(
        "dht",
        "get",
        "k",
        "--bootstrap",
        f"127.0.0.1:{free_udp_port()}",
        "--data-dir",
        str(tmp_path / "e"),
        home=tmp_path,
    )
    assert nobody.returncode == 2 and "no bootstrap node answered" in nobody.stderr


def test_demo_prints_what_it_did(tmp_path: Path) -> None:
    out = run_at_home("demo", "--nodes", "30", home=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "30 of 30 nodes found it" in out.stdout
    assert re.search(r"found 20 of the true 20 closest nodes", out.stdout)
    survivors = re.search(r"(\d+) of (\d+) survivors still find the record", out.stdout)
    assert survivors and survivors.group(1) == survivors.group(2)


def test_serve_put_get_across_processes(tmp_path: Path) -> None:
    port = free_udp_port()
    env = {**os.environ, "P2PSCHED_HOME": str(tmp_path / "home")}
    with subprocess.Popen(
        [
            *EXE,
            "dht",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "srv"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as server:
        try:
            assert server.stdout is not None
            first = server.stdout.readline()
            assert f"listening on 127.0.0.1:{port}" in first

            def dht(*args: str, node: str) -> subprocess.CompletedProcess[str]:
                seed = f"127.0.0.1:{port}"
                data_dir = str(tmp_path / node)
                return run_at_home(
                    "dht", *args, "--bootstrap", seed, "--data-dir", data_dir, home=tmp_path
                )

            put = dht("put", "greeting", "hello there", node="p")
            assert put.returncode == 0, put.stderr
            assert "stored 'greeting' on" in put.stdout
            got = dht("get", "greeting", node="g")
            assert got.returncode == 0, got.stderr
            assert "hello there" in got.stdout
            publisher = run_at_home(
                "id", "--data-dir", str(tmp_path / "p"), home=tmp_path
            ).stdout.strip()
            assert got.stdout.startswith(publisher[:16])
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                pytest.fail("the node did not stop on Ctrl-C")
        assert server.returncode == 0


# What `--help`, and a command that only asks a running node, must not wait for.
HEAVY = ("trio", "fastapi", "hypercorn", "pydantic", "yaml", "cryptography", "httpx", "httpcore",
         "p2psched.node", "p2psched.api.control", "p2psched.dht", "p2psched.scheduler")  # fmt: skip


def imported_by(*args: str, home: Path) -> set[str]:
    """The modules `p2psched ARGS` imports, as `python -X importtime` lists them."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "p2psched.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "P2PSCHED_HOME": str(home)},
    )
    return {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if "|" in line}


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.startswith(HEAVY)}


def test_help_imports_no_command_machinery(tmp_path: Path) -> None:
    """Building every command's parser imports none of trio, the node, the API server, the DHT:
    each command imports what it needs when it runs."""
    modules = imported_by("--help", home=tmp_path)
    assert "p2psched.cli.app" in modules and heavy(modules) == set()


def test_the_commands_that_ask_a_node_import_no_node_machinery(tmp_path: Path) -> None:
    """`jobs`, `workers --json`, ... talk to the node over HTTP: they import its client (on
    the standard library's http.client), not the node, nor the API server, nor trio."""
    gate = tmp_path / "gate"
    argv = [*EXE, "gate", "--listen", "127.0.0.1:0", "--data-dir", str(gate)]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + 60
            while not (gate / "api.json").exists():
                assert proc.poll() is None and time.monotonic() < deadline, "no gate"
                time.sleep(0.1)
            for command in (["jobs"], ["workers", "--json"], ["status", "j"], ["peers"]):
                modules = imported_by(*command, "--data-dir", str(gate), home=tmp_path)
                assert "http.client" in modules, command  # it did ask the node
                assert heavy(modules) == set(), command
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_every_error_a_user_can_cause_names_a_real_exception_class() -> None:
    """The app finds these classes by module and name: one that moved would go unrecognised,
    and its message would come out as a traceback."""
    import importlib

    from p2psched.cli.app import NODE_WENT_AWAY, USER_ERRORS

    for module, name in (*USER_ERRORS, *NODE_WENT_AWAY):
        found = getattr(importlib.import_module(module), name)
        assert isinstance(found, type) and issubclass(found, Exception), (module, name)


def test_a_table_on_a_pipe_keeps_each_row_whole_and_its_text_as_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from p2psched.cli.show import print_table

    reason = "exited with code 1: cannot read [/data/in.png] [bold]" + " and more" * 20
    print_table(("TASK", "ERROR"), [("j-1/0", reason), ("j-1/1", None)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TASK", "ERROR"]
    assert lines[2].startswith("j-1/0") and lines[2].endswith(reason)  # not wrapped, not markup
    assert lines[3] == "j-1/1"  # an empty cell leaves no trailing blanks
