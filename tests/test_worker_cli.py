"""Gate, workers and `p2psched workers` as separate processes on 127.0.0.1, as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from tests.harness.processes import EXE, free_udp_port, process

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
                    "worker",
                    "join",
                    "--gate",
                    gate,
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
