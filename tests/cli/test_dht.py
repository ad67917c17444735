"""`p2psched dht serve|put|get` and `p2psched demo` as a user runs them: real processes, real
data directories, real ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from p2psched import devnet
from tests.harness.processes import EXE, free_udp_port, p2psched, run_at_home


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


@pytest.mark.parametrize("net", [1], indirect=True)
def test_dht_serve_on_a_data_dir_a_node_runs_in_is_refused(net: devnet.Devnet) -> None:
    """`dht serve` runs a node too: on the data dir of a running gate it would be a second node
    with the gate's identity; it is refused, naming the process that holds the data dir."""
    held = net.folder / "gate"
    try:
        run = p2psched(
            "dht", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(held), timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"dht serve ran on {held}, which the gate holds")
    assert run.returncode == 2 and "in use by" in run.stderr, run.stderr
