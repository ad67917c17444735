"""`p2psched gate` as an operator runs it: its status, its limits file, and the reachability
workers learn from it (devnet processes on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2psched import devnet
from tests.harness.processes import p2psched


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
