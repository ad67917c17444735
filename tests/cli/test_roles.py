"""The commands that run a node in a role or set it up, as a user runs them: `init` and
`id`; `gate` with its status, its limits file and where its API may listen; `worker join`
with `p2psched workers` listing what joined; `worker drain|undrain`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shlex
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from p2psched import devnet
from p2psched.api.client import ControlClient
from p2psched.cli import roles
from p2psched.cli.roles import _join_command, _use_id_bits
from p2psched.dht.config_file import DhtSettings
from p2psched.identity import ID_BITS_ENV, network_id_bits
from tests.harness.processes import (
    EXE,
    free_udp_port,
    load_receipt,
    matrix_job,
    p2psched,
    process,
    run_at_home,
    submit_json,
)


def test_init_then_id(tmp_path: Path) -> None:
    made = run_at_home("init", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert made.returncode == 0
    node_id = re.search(r"identity ([0-9a-f]{64})", made.stdout).group(1)  # type: ignore[union-attr]
    shown = run_at_home("id", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert shown.stdout.strip() == node_id
    again = run_at_home("init", "--data-dir", str(tmp_path / "a"), home=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("net", [2], indirect=True)
def test_gate_status_shows_the_relay_and_what_it_did(net: devnet.Devnet) -> None:
    out = p2psched("gate", "status", "--data-dir", str(net.folder / "gate"))
    assert out.returncode == 0, out.stderr
    host, port = net.gate.rsplit(":", 1)
    assert f"relay on {host}:{port} (TCP)" in out.stdout  # the DHT's port number, on TCP
    assert "reservations: 0" in out.stdout and "circuits: 0" in out.stdout
    # Both workers asked to be dialed back, were reached, and so take tasks directly.
    assert "dialbacks_reachable=2" in out.stdout, out.stdout
    status = json.loads(
        p2psched("gate", "status", "--json", "--data-dir", str(net.folder / "gate")).stdout
    )
    assert status["counters"]["dialbacks_reachable"] == 2
    assert status["limits"]["circuits_per_peer"] == 16
    for log in sorted(net.folder.glob("worker-*.log")):
        assert "reachability: public (the gate at" in log.read_text()


@pytest.mark.parametrize("net", [1], indirect=True)
def test_gate_status_of_a_node_that_is_not_a_gate_says_so(net: devnet.Devnet) -> None:
    out = p2psched("gate", "status", "--data-dir", str(net.folder / "worker-0"))
    assert out.returncode != 0
    assert "this node is not a gate" in out.stderr


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ("circuits_per_pear = 3", "unknown relay limit 'circuits_per_pear'"),
        ("bandwidth = -1", "bandwidth: -1 is not a positive number"),
        ("bandwidth = 'fast'", "bandwidth: 'fast' is not a positive number"),
        ("reservations = true", "relay limit reservations: True is not a positive whole number"),
        ("circuits = 8\n[rleay]\ncircuits = 9", "[rleay]: unknown table; known: [relay]"),
    ],
)
def test_a_bad_limits_file_is_refused_before_the_gate_starts(
    tmp_path: Path, table: str, said: str
) -> None:
    config = tmp_path / "gate.toml"
    config.write_text(f"[relay]\n{table}\n")
    folder = str(tmp_path / "g")
    out = p2psched("gate", "--listen", "127.0.0.1:0", "--config", str(config), "--data-dir", folder)
    assert out.returncode == 2
    assert said in out.stderr and str(config) in out.stderr


def test_the_control_api_leaves_loopback_only_when_told_twice(tmp_path: Path) -> None:
    out = p2psched(
        "gate", "--listen", "127.0.0.1:0", "--api-host", "0.0.0.0", "--data-dir", str(tmp_path)
    )
    assert out.returncode == 2
    assert "--api-remote" in out.stderr and "api.token" in out.stderr
    out = p2psched("gate", "--api-host", "not-an-ip", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "not an IP address" in out.stderr


TTL = 6.0


def workers_json(gate: str, tmp: Path, need: str = "") -> list[dict[str, object]]:
    out = subprocess.run(
        [
            *EXE,
            "workers",
            "--gate",
            gate,
            "--json",
            "--need",
            need,
            "--data-dir",
            str(tmp / "asker"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_a_gate_five_workers_and_a_listing(tmp_path: Path) -> None:
    gate = f"127.0.0.1:{free_udp_port()}"
    with ExitStack() as stack:
        g = stack.enter_context(
            process("gate", "--listen", gate, "--data-dir", str(tmp_path / "g"), home=tmp_path)
        )
        assert g.stdout is not None and "listening on" in g.stdout.readline()
        # The gate says how workers join it: a command that works as printed.
        said = g.stdout.readline()
        join = re.fullmatch(r"  workers join with: (p2psched worker join [^(]+?) \(.*\)\n", said)
        assert join is not None and join[1] == f"p2psched worker join --gate {gate}", said
        workers = {}
        for i in range(5):
            config = tmp_path / f"w{i}.toml"
            config.write_text(
                f'[worker]\nslots = {i + 1}\nmin_price = 0.0{i}\nmodels = ["model-{i}"]\n'
                f"[override]\nram_gb = {16 * (i + 1)}\n"
                + ('gpus = [{ model = "NVIDIA A100-SXM4-40GB", vram_gb = 40 }]\n' if i % 2 else "")
            )
            w = stack.enter_context(
                process(
                    *shlex.split(join[1])[1:],  # (as the gate said)
                    "--config",
                    str(config),
                    "--ad-ttl",
                    str(TTL),
                    "--data-dir",
                    str(tmp_path / f"w{i}"),
                    home=tmp_path,
                )
            )
            assert w.stdout is not None
            line = w.stdout.readline()
            assert line.startswith("worker "), line + (w.stderr.read() if w.stderr else "")
            workers[line.split()[1]] = w
            for _ in range(4):  # the rest of what it prints about itself
                w.stdout.readline()
        # Right away: an early worker's ad went to the few nodes there were then, and reached
        # the later ones by hand-over when they joined, not at its first renewal.
        listed = workers_json(gate, tmp_path)
        assert {x["node_id"] for x in listed} == set(workers)
        by_name = workers_json(gate.replace("127.0.0.1", "localhost"), tmp_path)
        assert {x["node_id"] for x in by_name} == set(workers)  # a gate named, not numbered
        assert {"node_id", "gpus", "ram_gb", "models", "price"} <= set(listed[0])
        a100 = workers_json(gate, tmp_path, "gpu=A100,ram>=32")
        assert sorted(x["ram_gb"] for x in a100) == [32.0, 64.0]

        # Ctrl-C: the worker withdraws its ad and exits cleanly; it is gone at once.
        leaving, killed, stopped = list(workers)[:3]
        workers[leaving].send_signal(signal.SIGINT)
        assert workers[leaving].wait(timeout=15) == 0
        assert leaving not in {x["node_id"] for x in workers_json(gate, tmp_path)}
        # SIGTERM (what service managers send) does the same.
        workers[stopped].send_signal(signal.SIGTERM)
        assert workers[stopped].wait(timeout=15) == 0
        out = workers[stopped].stdout.read() if workers[stopped].stdout else ""
        assert "ad withdrawn" in out
        assert stopped not in {x["node_id"] for x in workers_json(gate, tmp_path)}

        # SIGKILL: no withdrawal; the ad lapses within one TTL.
        workers[killed].kill()
        deadline = time.monotonic() + TTL + 4
        while killed in {x["node_id"] for x in workers_json(gate, tmp_path)}:
            assert time.monotonic() < deadline, "a killed worker's ad outlived its TTL"
            time.sleep(0.5)
        remaining = {x["node_id"] for x in workers_json(gate, tmp_path)}
        assert remaining == set(workers) - {leaving, killed, stopped}  # the others renew theirs


def test_bad_config_and_need_are_clear_errors(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=60)

    bad = tmp_path / "bad.toml"
    bad.write_text('[worker]\ndrivers = ["ftp"]\n')
    out = cli(
        "worker",
        "join",
        "--gate",
        "127.0.0.1:9",
        "--config",
        str(bad),
        "--data-dir",
        str(tmp_path / "w"),
    )
    assert out.returncode == 2 and "[worker] drivers: unknown driver 'ftp'" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli(
        "workers",
        "--gate",
        "127.0.0.1:9",
        "--need",
        "vram>=lots",
        "--data-dir",
        str(tmp_path / "a"),
    )
    assert out.returncode == 2 and "takes a number" in out.stderr


@pytest.mark.parametrize("net", [2], indirect=True)
def test_a_drained_worker_takes_no_new_tasks(net: devnet.Devnet, tmp_path: Path) -> None:
    drained = net.folder / "worker-0"
    out = p2psched("worker", "drain", "--data-dir", str(drained))
    assert out.returncode == 0 and "draining" in out.stdout, out.stderr
    job = matrix_job(tmp_path, "hi", "echo", "'{i}'", 10)
    out = submit_json(job, net.gate, tmp_path / "r", tmp_path / "me")
    assert out.returncode == 0, out.stderr
    drained_id = json.loads((drained / "api.json").read_text())["node_id"]
    workers = {
        load_receipt(p)[0].worker.hex() for p in (tmp_path / "r" / "hi").glob("*.receipt.json")
    }
    assert workers and drained_id not in workers
    out = p2psched("worker", "undrain", "--data-dir", str(drained))
    assert out.returncode == 0 and "taking tasks again" in out.stdout


def test_drain_on_a_node_that_is_not_a_worker(node: Path) -> None:
    out = p2psched("worker", "drain", "--data-dir", str(node))
    assert out.returncode == 2 and "this node is not a worker" in out.stderr


def test_a_valid_limits_file_is_what_the_running_gate_applies(tmp_path: Path) -> None:
    """The limits a gate runs with (its relay's own, as `gate status` reads them from the
    running relay) are the file's where it sets them, the defaults elsewhere."""
    config = tmp_path / "gate.toml"
    config.write_text(
        "[relay]\ncircuits_per_peer = 3\nreservations_per_peer = 1\nbandwidth = 5e6\n"
    )
    data = tmp_path / "g"
    args = ("gate", "--listen", "127.0.0.1:0", "--config", str(config), "--data-dir", str(data))
    with process(*args, home=tmp_path) as proc:
        deadline = time.monotonic() + 60
        while (client := ControlClient.find(data)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the gate did not start"
            time.sleep(0.1)
        client.close()
        out = p2psched("gate", "status", "--json", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    limits = json.loads(out.stdout)["limits"]
    assert limits["circuits_per_peer"] == 3 and limits["reservations_per_peer"] == 1
    assert limits["bandwidth"] == 5e6
    assert limits["circuits"] == 4096  # not in the file: the default


@pytest.mark.parametrize(
    ("command_line", "file", "env", "wins"),
    [(7, 9, "5", 7), (None, 9, "5", 9), (None, None, "5", 5)],
)
def test_id_bits_from_the_command_line_then_the_file_then_the_environment(
    monkeypatch: pytest.MonkeyPatch, command_line: int | None, file: int | None, env: str, wins: int
) -> None:
    monkeypatch.setenv(ID_BITS_ENV, env)
    if command_line is not None:  # what `main` does with --id-bits, before any command runs
        monkeypatch.setenv(ID_BITS_ENV, str(command_line))
    _use_id_bits(argparse.Namespace(id_bits=command_line), DhtSettings(id_bits=file))
    assert network_id_bits() == wins


def test_a_gate_says_where_workers_join_it_as_a_command_that_works_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address workers reach it at (a wildcard bind names this machine's address, or
    says that HOST is to be replaced), and a data dir of the worker's own when the gate has
    the default one (two nodes cannot share one)."""
    home = tmp_path / "home"
    monkeypatch.setenv("P2PSCHED_HOME", str(home))
    ours = tmp_path / "gate"
    assert _join_command("127.0.0.1", ours).format(port=4000) == (
        "p2psched worker join --gate 127.0.0.1:4000 "
        "(on this machine only: the gate listens on loopback)"
    )
    assert _join_command("10.1.2.3", ours).format(port=4000) == (
        "p2psched worker join --gate 10.1.2.3:4000"
    )
    assert _join_command("fd00::7", ours).format(port=4000) == (
        "p2psched worker join --gate [fd00::7]:4000"
    )
    shared = _join_command("10.1.2.3", home).format(port=4000)
    assert shared == f"p2psched worker join --data-dir {tmp_path}/home-worker --gate 10.1.2.3:4000"
    # Bound to any address: the one on its default route, if it has one.
    wild = _join_command("0.0.0.0", ours).format(port=4000)
    named = re.fullmatch(r"p2psched worker join --gate (\S+):4000 \((\S+): .*\)", wild)
    assert named is not None and named[1] == named[2], wild
    assert named[1] == "HOST" or ipaddress.ip_address(named[1]).version == 4, wild
    assert named[1] != "0.0.0.0"

    def no_route(bound: str, toward: tuple[str, int]) -> str:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(roles, "_route_host", no_route)
    assert _join_command("::", ours).format(port=4000) == (
        "p2psched worker join --gate HOST:4000 (HOST: this machine's address, as workers reach it)"
    )


def test_a_gate_says_how_workers_join_it_with_its_own_address(tmp_path: Path) -> None:
    """The gate's headline hint for workers works when copied: it names the address the gate
    listens on, not a placeholder."""
    gate = f"127.0.0.1:{free_udp_port()}"
    with process("gate", "--listen", gate, "--data-dir", str(tmp_path / "g"), home=tmp_path) as g:
        assert g.stdout is not None and "listening on" in g.stdout.readline()
        said = g.stdout.readline()
    (hint,) = re.findall(r"workers join with: (p2psched worker join [^;]*)", said)
    assert f"--gate {gate}" in hint, said
