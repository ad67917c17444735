"""The command line, run as a user would: real processes, real data directories, real ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXE = [sys.executable, "-m", "p2psched.cli"]


def run(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "P2PSCHED_HOME": str(home / "default-home")}
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_init_then_id(tmp_path: Path) -> None:
    made = run("init", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert made.returncode == 0
    node_id = re.search(r"identity ([0-9a-f]{64})", made.stdout).group(1)  # type: ignore[union-attr]
    shown = run("id", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert shown.stdout.strip() == node_id
    again = run("init", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_missing_and_corrupt_keys_are_clear_errors(tmp_path: Path) -> None:
    missing = run("id", "--data-dir", str(tmp_path / "nowhere"), home=tmp_path)
    assert missing.returncode == 2
    assert "identity.key is missing" in missing.stderr and "p2psched init" in missing.stderr
    assert "Traceback" not in missing.stderr
    run("init", "--data-dir", str(tmp_path / "b"), home=tmp_path)
    (tmp_path / "b" / "identity.key").write_bytes(b"p2psched-ed25519-v1\nnot hex\n")
    corrupt = run(
        "dht", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "b"), home=tmp_path
    )
    assert (
        corrupt.returncode == 2
        and "corrupt" in corrupt.stderr
        and "Traceback" not in corrupt.stderr
    )


def test_bad_arguments_name_what_is_wrong(tmp_path: Path) -> None:
    bad = run(
        "dht", "serve", "--listen", "nonsense", "--data-dir", str(tmp_path / "c"), home=tmp_path
    )
    assert bad.returncode == 2 and "--listen 'nonsense' is not HOST:PORT" in bad.stderr
    big = run(
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
    nobody = run(
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
    out = run("demo", "--nodes", "30", home=tmp_path, timeout=120)
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
                return run("dht", *args, "--bootstrap", seed, "--data-dir", data_dir, home=tmp_path)

            put = dht("put", "greeting", "hello there", node="p")
            assert put.returncode == 0, put.stderr
            assert "stored 'greeting' on" in put.stdout
            got = dht("get", "greeting", node="g")
            assert got.returncode == 0, got.stderr
            assert "hello there" in got.stdout
            publisher = run("id", "--data-dir", str(tmp_path / "p"), home=tmp_path).stdout.strip()
            assert got.stdout.startswith(publisher[:16])
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                pytest.fail("the node did not stop on Ctrl-C")
        assert server.returncode == 0
