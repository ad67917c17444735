"""The operator's commands against a running devnet: top, peers, workers, ui."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2psched import devnet
from tests.harness.processes import p2psched


@pytest.mark.parametrize("net", [2], indirect=True)
def test_top_peers_and_ui_show_the_running_node(net: devnet.Devnet, tmp_path: Path) -> None:
    gate = str(net.folder / "gate")
    job = tmp_path / "hello.yaml"
    job.write_text("name: hello\ndriver: echo\ntasks:\n  - input: 1\n  - input: 2\n")
    done = p2psched("submit", str(job), "--data-dir", gate, "--json", "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job"]

    top = p2psched("top", "--once", "--data-dir", gate)
    assert top.returncode == 0, top.stderr
    assert "roles gate, scheduler" in top.stdout and job_id[:8] in top.stdout
    assert "2/2" in top.stdout  # its progress
    workers = [
        json.loads((net.folder / f"worker-{i}" / "api.json").read_text())["node_id"]
        for i in range(2)
    ]
    assert any(w[:16] in top.stdout for w in workers)  # those the job used, with its figures
    assert "relay 127.0.0.1:" in top.stdout and "recent failures" in top.stdout

    peers = p2psched("peers", "--data-dir", gate)
    assert peers.returncode == 0 and "peers in the routing table" in peers.stdout
    assert all(w in peers.stdout for w in workers)
    listed = json.loads(p2psched("peers", "--json", "--data-dir", gate).stdout)["peers"]
    assert {p["node_id"] for p in listed} >= set(workers)

    # `workers` asks the running node when no --gate is given: the same shape as through one.
    asked = p2psched("workers", "--json", "--need", "driver=echo", "--data-dir", gate)
    assert asked.returncode == 0, asked.stderr
    ads = [json.loads(line) for line in asked.stdout.splitlines()]
    assert {a["node_id"] for a in ads} == set(workers)
    assert all({"gpus", "ram_gb", "price", "addresses", "expires_in"} <= set(a) for a in ads)
    via_gate = p2psched("workers", "--json", "--need", "driver=echo", "--gate", net.gate,
                        "--data-dir", str(tmp_path / "asker"))  # fmt: skip
    assert {json.loads(line)["node_id"] for line in via_gate.stdout.splitlines()} == set(workers)
    table = p2psched("workers", "--data-dir", gate)
    assert "2 worker(s) matching" in table.stdout and "MODELS" in table.stdout

    ui = p2psched("ui", "--data-dir", gate)
    token = (net.folder / "gate" / "api.token").read_text().strip()
    assert ui.returncode == 0 and ui.stdout.strip().endswith(f"/ui#token={token}")
