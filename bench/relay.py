"""What the relay costs: a task's round trip and payload throughput, direct against through a
gate's relay, in the same run.

Processes, all on loopback: a gate (`p2psched gate`), and four workers joined through it, each
its own process (`p2psched worker join`): two that schedulers dial directly
(`--reachability public`) and two behind the relay (`--reachability private`: they listen
nowhere, and every byte to them crosses the gate). This process is the scheduler node, and
submits jobs as `p2psched submit` does; a label on each worker picks which one a job runs on.

- Round trip: a job of N echo tasks with tiny inputs, on a worker with one slot and no queue:
  a task is sent only once the one before came back, so seconds per task is one task's round
  trip (commitment and dispatch, the run, the result with its signed receipt, the ack) plus the
  scheduler's own step, which is the same on both paths.
- Throughput: M echo tasks of 256 KiB input (echoed: 512 KiB cross per task) on a worker with
  two slots and a queue of four, so the channel stays full: bytes that crossed / makespan.

Rounds alternate direct and relayed; medians are reported. The gate's bandwidth cap (125 MB/s by
default, an operator's setting) is raised to 10 GB/s here: this measures the relay, not the cap.
On this 2-core machine the gate competes for the same cores as the two ends; a gate on its own
host would cost less.

    python bench/relay.py [--rounds 5] [--rtt-tasks 200] [--bulk-tasks 60]

Ends with: relay rtt_ratio=<relayed/direct> throughput_ratio=<relayed/direct>
(targets: rtt_ratio <= 1.5, throughput_ratio >= 0.7)
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from p2psched.identity import Identity
from p2psched.node.node import open_node
from p2psched.scheduler.job import parse_job

EXE = [sys.executable, "-m", "p2psched.cli"]
PAYLOAD = 256 * 1024
WORKERS = {  # label -> (reachability, slots, queue)
    "direct-seq": ("public", 1, 0),
    "relay-seq": ("private", 1, 0),
    "direct-bulk": ("public", 2, 4),
    "relay-bulk": ("private", 2, 4),
}


class Proc:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.popen = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, text=True)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log.read_text(), re.M)
            if found:
                return found
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.log.name}: no {pattern!r}:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()


@dataclass
class Network:
    gate: str  # the gate's HOST:PORT
    procs: dict[str, Proc]  # "gate" and each worker's label
    tasks_on: dict[str, str]  # each worker's label -> where it takes tasks, as advertised


@contextmanager
def network(
    folder: Path,
    workers: dict[str, tuple[str, int, int]] = WORKERS,
    drivers: tuple[str, ...] = ("echo",),
    relay: str = "bandwidth = 10e9",
) -> Iterator[Network]:
    """The gate (its `[relay]` table: `relay`) and `workers` (label -> (reachability, slots,
    queue)), each its own process; stops them all on leaving."""
    procs: dict[str, Proc] = {}
    try:
        config = folder / "gate.toml"
        config.write_text(f"[relay]\n{relay}\n")
        gate = Proc(
            [
                *EXE,
                "gate",
                "--listen",
                "127.0.0.1:0",
                "--config",
                str(config),
                "--data-dir",
                str(folder / "gate"),
            ],
            folder / "gate.log",
        )
        procs["gate"] = gate
        net = Network(gate.wait_for(r"listening on (\S+)").group(1), procs, {})
        listed = ", ".join(f'"{d}"' for d in drivers)
        for label, (reach, slots, queue) in workers.items():
            toml = folder / f"{label}.toml"
            toml.write_text(
                f"[worker]\nslots = {slots}\nqueue = {queue}\ndrivers = [{listed}]\n"
                f'labels = {{ role = "{label}" }}\n'
            )
            w = Proc(
                [
                    *EXE,
                    "worker",
                    "join",
                    "--gate",
                    net.gate,
                    "--reachability",
                    reach,
                    "--config",
                    str(toml),
                    "--data-dir",
                    str(folder / label),
                ],
                folder / f"{label}.log",
            )
            procs[label] = w
            tasks_on = w.wait_for(r"tasks on (\S+)").group(1)
            assert ("/relay/" in tasks_on) == (reach == "private"), (label, tasks_on)
            net.tasks_on[label] = tasks_on
        yield net
    finally:
        for p in reversed(procs.values()):
            p.stop()


def job(name: str, label: str, n: int, payload: int) -> dict[str, Any]:
    return {
        "name": name,
        "driver": "echo",
        "resources": {"labels": {"role": label}},
        "template": {"input": {"i": "{i}", "pad": "x" * payload}},
        "matrix": {"i": list(range(n))},
        "timeout": "120s",
    }


async def run_rounds(
    gate: str, rounds: int, rtt_tasks: int, bulk_tasks: int
) -> dict[str, list[float]]:
    host, _, port = gate.rpartition(":")
    out: dict[str, list[float]] = {
        k: [] for k in ("rtt-direct", "rtt-relay", "bulk-direct", "bulk-relay")
    }
    with tempfile.TemporaryDirectory() as tmp:
        async with open_node(
            Identity.generate(), Path(tmp), seeds=[(host, int(port))], dht_client=True
        ) as node:

            async def timed(doc: dict[str, Any]) -> float:
                spec = parse_job(doc)
                t0 = time.perf_counter()
                submitted = node.jobs.submit(spec)
                await submitted.done.wait()
                took = time.perf_counter() - t0
                counts = dict(submitted.run.counts())
                assert counts == {"completed": len(submitted.run.tasks)}, (doc["name"], counts)
                return took

            # One warm-up each: channels open, the predictor has seen each worker.
            for path in ("direct", "relay"):
                await timed(job("warm", f"{path}-seq", 5, 0))
                await timed(job("warm", f"{path}-bulk", 4, PAYLOAD))
            for r in range(rounds):
                order = ("direct", "relay") if r % 2 == 0 else ("relay", "direct")
                for path in order:
                    took = await timed(job(f"rtt-{path}", f"{path}-seq", rtt_tasks, 0))
                    out[f"rtt-{path}"].append(took / rtt_tasks)
                for path in order:
                    took = await timed(job(f"bulk-{path}", f"{path}-bulk", bulk_tasks, PAYLOAD))
                    out[f"bulk-{path}"].append(2 * PAYLOAD * bulk_tasks / took)
                print(f"  round {r + 1}/{rounds} done", flush=True)
    return out


def span(values: list[float], scale: float) -> str:
    return f"{min(values) * scale:.2f}..{max(values) * scale:.2f}".rjust(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rtt-tasks", type=int, default=200)
    parser.add_argument("--bulk-tasks", type=int, default=60)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        with network(Path(tmp)) as net:
            gate = net.gate
            print(f"gate {gate}; 4 workers (2 direct, 2 behind the relay); {args.rounds} rounds")
            got = trio.run(run_rounds, gate, args.rounds, args.rtt_tasks, args.bulk_tasks)
    med = {k: statistics.median(v) for k, v in got.items()}
    print()
    print(f"{'measure':<34} {'direct':>12} {'relayed':>12} {'relayed/direct':>15}")
    rtt_ratio = med["rtt-relay"] / med["rtt-direct"]
    tp_ratio = med["bulk-relay"] / med["bulk-direct"]
    print(
        f"{'task round trip, ms (median)':<34} {med['rtt-direct'] * 1e3:>12.3f} "
        f"{med['rtt-relay'] * 1e3:>12.3f} {rtt_ratio:>15.3f}"
    )
    spread = f"{'  min..max over rounds':<34}"
    print(f"{spread} {span(got['rtt-direct'], 1e3)} {span(got['rtt-relay'], 1e3)}")
    print(
        f"{'payload throughput, MB/s (median)':<34} {med['bulk-direct'] / 1e6:>12.1f} "
        f"{med['bulk-relay'] / 1e6:>12.1f} {tp_ratio:>15.3f}"
    )
    print(f"{spread} {span(got['bulk-direct'], 1e-6)} {span(got['bulk-relay'], 1e-6)}")
    print()
    print(f"relay rtt_ratio={rtt_ratio:.3f} throughput_ratio={tp_ratio:.3f}")


if __name__ == "__main__":
    main()
