"""The command line as a whole, run as a user would: a mistake the user can fix is one
clear line on stderr, never a traceback; `--help` and the commands that only ask a running
node import none of the node's machinery."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from ipaddress import ip_network
from pathlib import Path

import pytest

from p2psched.cli.app import build_parser
from p2psched.cli.args import trusted_networks
from p2psched.dht.routing import TrustedNetworks
from p2psched.identity import id_has_work
from tests.harness.processes import EXE, p2psched, run_at_home


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


def test_id_bits_on_the_command_line_is_the_work_ids_make_and_must_show(tmp_path: Path) -> None:
    """`--id-bits` over `P2PSCHED_ID_BITS` (4 in the tests): `init` makes an id with that much
    work; a command run with more refuses it, naming the bits and the fix; out of range is a
    usage error that names the option."""
    data = str(tmp_path / "a")
    assert run_at_home("init", "--id-bits", "12", "--data-dir", data, home=tmp_path).returncode == 0
    shown = run_at_home("id", "--data-dir", data, home=tmp_path)
    assert id_has_work(bytes.fromhex(shown.stdout.strip()), 12)
    refused = run_at_home("id", "--id-bits", "24", "--data-dir", data, home=tmp_path)
    assert (
        refused.returncode == 2
        and "(24 bits" in refused.stderr
        and "--id-bits 24" in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    wrong = run_at_home("init", "--id-bits", "33", "--data-dir", data, home=tmp_path)
    assert wrong.returncode == 2 and "--id-bits: '33' is not a number of bits" in wrong.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["cancel", "somejob/"], "give a job (JOB) or one of its tasks (JOB/N)"),
        (["node", "--gate", "127.0.0.1:9", "--api-port", "70000"], "is not a port number"),
        (["devnet", "up", "--workers", "0"], "a devnet has 1..200 workers"),
        (["status", "../node"], "no node runs on"),
        (
            ["workers", "--gate", "127.0.0.1:9", "--trusted-net", "lab"],
            "--trusted-net: trusted network 'lab' is not an IP network",
        ),
    ],
)
def test_bad_command_lines_are_one_clear_line(
    tmp_path: Path, args: list[str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2PSCHED_HOME", str(tmp_path / "home"))  # never the user's own
    out = (
        p2psched(*args, "--data-dir", str(tmp_path))
        if args[0] in ("cancel", "status")
        else (p2psched(*args))
    )
    assert out.returncode == 2 and says in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["gate"],
        ["node", "--gate", "127.0.0.1:9"],
        ["worker", "join", "--gate", "127.0.0.1:9"],
        ["workers", "--gate", "127.0.0.1:9"],
        ["dht", "serve"],
        ["dht", "get", "k", "--bootstrap", "127.0.0.1:9"],
    ],
)
def test_every_command_that_runs_a_dht_node_takes_the_trust_options(command: list[str]) -> None:
    args = build_parser().parse_args([*command, "--trusted-net", "100.64.0.0/10", "--cap-lan"])
    assert trusted_networks(args) == TrustedNetworks(False, (ip_network("100.64.0.0/10"),))
    assert trusted_networks(build_parser().parse_args(command)) == TrustedNetworks()


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


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    """`p2psched ... | head -1`: when the reader of stdout has gone, the command stops as a
    program SIGPIPE ended would (141), with nothing said on stderr."""
    me = tmp_path / "me"
    assert p2psched("init", "--data-dir", str(me)).returncode == 0
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    with os.fdopen(write, "wb") as stdout:
        run = subprocess.run(
            [*EXE, "id", "--data-dir", str(me)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert run.returncode == 141, run.stderr
    assert run.stderr == "", run.stderr
