"""The operator's commands against a running devnet: top, peers, workers, ui."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from p2psched import devnet
from p2psched.store import Store
from tests.harness.processes import p2psched, running_node
from tests.harness.store import reputation


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


@pytest.mark.parametrize("net", [1], indirect=True)
def test_a_restarted_node_still_shows_a_workers_disputes_in_workers(
    net: devnet.Devnet, tmp_path: Path
) -> None:
    """The scheduler's record of a worker lives in the node's state: a node started again on
    its data dir shows the disputes it recorded before (seeded here through the store, as the
    node's scheduler writes them), and that the worker is skipped, until when and why."""
    worker = json.loads((net.folder / "worker-0" / "api.json").read_text())["node_id"]
    data = tmp_path / "node"
    assert p2psched("init", "--data-dir", str(data)).returncode == 0
    why = "its result for task t3 was disputed: result differs from the canonical one"
    record = reputation(
        bytes.fromhex(worker),
        time.time(),
        verified=5,
        disputed=2,
        capacity="failed",
        skip_until=time.time() + 86_400,
        skip_reason=why,
    )
    with Store.open(data / "state.db") as store:
        store.write([record])
    for _ in range(2):  # started, then started again on the same data dir
        with running_node(net.gate, data):
            table = p2psched("workers", "--need", "driver=echo", "--data-dir", str(data))
            assert table.returncode == 0, table.stderr
            lines = table.stdout.splitlines()
            head, row = lines[1], lines[3]  # (a rule between them)
            assert "VERIFIED/DISPUTED" in head and "CAPACITY" in head
            assert row.startswith(worker[:16]) and "5/2" in row and "failed" in row
            assert f"{worker[:16]} is skipped until " in table.stdout and why in table.stdout
            asked = p2psched("workers", "--json", "--need", "driver=echo", "--data-dir", str(data))
            (ad,) = [json.loads(line) for line in asked.stdout.splitlines()]
            assert ad["reputation"]["disputed"] == 2 and ad["reputation"]["barred"] is True
