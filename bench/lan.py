"""LAN benchmark: a lab on one private /24, each node a process in its own network namespace.

A gate and 4, 12, 24, then 32 workers (`p2psched gate`, `p2psched worker join`, as a user runs
them) on 10.79.0.0/24; after each step, `p2psched workers --gate` from a fresh node on the same
LAN, timed (the median of --repeats, each with a fresh identity) and its answer counted. Two
labs share the hosts, each its own DHT on its own ports: one with the old rule (every node
started with `--cap-lan`: LAN peers held to the per-/24 limits), one with the new (LAN peers
exempt). Their lookups alternate, so a change in the machine's load falls on both alike. Needs
root (network namespaces).

    sudo python bench/lan.py [--steps 4,12,24,32] [--repeats 3]

Ends with:
lan workers_s_at_32=<x> workers_s_at_4=<y>      (the new rule; the last and first steps)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the LAN is built by the test harness

from tests.harness import netns  # noqa: E402
from tests.harness.lan import Lan, lan_topology  # noqa: E402
from tests.harness.netns import Proc, check_in  # noqa: E402

EXE = [sys.executable, "-m", "p2psched.cli"]
GATE_PORT, WORKER_PORT = 4000, 5000  # the old rule's lab; the new one's at +1
START_S = 120.0
WORKER_TOML = '[worker]\nslots = 1\ndrivers = ["echo"]\n'
RULES = {"old": ["--cap-lan"], "new": []}
PORT_OFFSET = {"old": 0, "new": 1}


@dataclass
class Lab:
    """One rule's lab: its flags, its ports, its folder, and its processes (gate first)."""

    rule: str
    home: Path
    procs: list[Proc] = field(default_factory=list)

    @property
    def flags(self) -> list[str]:
        return RULES[self.rule]

    def gate(self, lan: Lan) -> str:
        return f"{lan.ips[0]}:{GATE_PORT + PORT_OFFSET[self.rule]}"


@contextmanager
def open_lab(lan: Lan, rule: str, home: Path) -> Iterator[Lab]:
    """A gate on the first host; `grow` adds the workers. All killed on the way out."""
    lab = Lab(rule, home / rule)
    lab.home.mkdir()
    argv = [*EXE, "gate", "--listen", lab.gate(lan), *lab.flags, "--data-dir", str(lab.home / "g")]
    lab.procs.append(Proc(f"{rule} gate", lan.hosts[0], argv, cwd=ROOT))
    try:
        lab.procs[0].wait_for("listening on", START_S)
        yield lab
    finally:
        for proc in lab.procs:
            proc.kill()


def grow(lan: Lan, lab: Lab, to: int) -> list[Proc]:
    """Start workers on hosts 1.. until there are `to`; the ones started."""
    config = lab.home / "worker.toml"
    config.write_text(WORKER_TOML)
    started = []
    for i in range(len(lab.procs), to + 1):
        listen = f"{lan.ips[i]}:{WORKER_PORT + PORT_OFFSET[lab.rule]}"
        argv = [*EXE, "worker", "join", "--gate", lab.gate(lan), "--listen", listen]
        argv += ["--reachability", "public", "--config", str(config), *lab.flags]
        argv += ["--data-dir", str(lab.home / f"w{i}")]
        started.append(Proc(f"{lab.rule} worker {i}", lan.hosts[i], argv, cwd=ROOT))
    lab.procs.extend(started)
    return started


def workers_from_fresh_node(lan: Lan, lab: Lab, run: int) -> tuple[float, int]:
    """Seconds `p2psched workers --gate` took from the last host, and how many it listed."""
    argv = [*EXE, "workers", "--gate", lab.gate(lan), "--json", *lab.flags]
    argv += ["--data-dir", str(lab.home / f"fresh{run}")]
    began = time.monotonic()
    out = check_in(lan.hosts[-1], argv, cwd=ROOT, timeout=300)
    took = time.monotonic() - began
    return took, len([line for line in out.stdout.splitlines() if line.startswith("{")])


def measure(lan: Lan, labs: list[Lab], n: int, repeats: int) -> dict[str, tuple[float, int]]:
    """Per rule, the median time of `repeats` lookups and the fewest workers one listed; the
    rules' lookups alternate."""
    times: dict[str, list[float]] = {lab.rule: [] for lab in labs}
    counts: dict[str, list[int]] = {lab.rule: [] for lab in labs}
    for run in range(repeats):
        for lab in labs:
            took, found = workers_from_fresh_node(lan, lab, n * 100 + run)
            times[lab.rule].append(took)
            counts[lab.rule].append(found)
    for rule, ts in times.items():
        print(f"  {rule} rule, {n} workers: {', '.join(f'{t:.2f}' for t in ts)} s", file=sys.stderr)
    return {rule: (statistics.median(times[rule]), min(counts[rule])) for rule in times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="4,12,24,32", help="worker counts, ascending")
    parser.add_argument("--repeats", type=int, default=5, help="fresh lookups per step and rule")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    reason = netns.can_make_namespaces()
    if reason is not None:
        sys.exit(f"bench/lan.py: {reason}")
    results: dict[int, dict[str, tuple[float, int]]] = {}
    with ExitStack() as stack:
        lan = stack.enter_context(lan_topology(steps[-1] + 2))
        home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        labs = [stack.enter_context(open_lab(lan, rule, home)) for rule in RULES]
        for n in steps:
            for proc in [p for lab in labs for p in grow(lan, lab, n)]:
                proc.wait_for("control API", START_S)
            results[n] = measure(lan, labs, n, args.repeats)
    print(f"{'workers':>8} {'old s':>7} {'old found':>10} {'new s':>7} {'new found':>10}")
    for n in steps:
        (old_s, old_found), (new_s, new_found) = results[n]["old"], results[n]["new"]
        print(f"{n:>8} {old_s:>7.2f} {old_found:>10} {new_s:>7.2f} {new_found:>10}")
    first, last = results[steps[0]]["new"][0], results[steps[-1]]["new"][0]
    print(f"lan workers_s_at_{steps[-1]}={last:.2f} workers_s_at_{steps[0]}={first:.2f}")


if __name__ == "__main__":
    main()
