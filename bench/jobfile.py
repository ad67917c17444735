"""Submitting a large job file: reading it (libyaml's parser against PyYAML's own, under the
same checks), checking it, and what the node does per task once it has it (deriving the tasks,
journaling the job, storing them, the run that queues them).

Each file is a list of echo tasks, about 128 bytes each as a person would write them (a name, an
input of text, numbers, a flag, a list, a null), so 20,000 tasks make 2.5 MiB. The node is one
started here with a store, and no workers: a submit ends when the job is queued.

    python bench/jobfile.py [--tasks 20000] [--large 100000]

Ends with: jobfile load_s_libyaml=<x> load_s_pure=<y> submit_s=<z> tasks=<n>, of the first
file: what `p2psched submit` takes to read and check it (load), and a node to take it on.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from p2psched.identity import Identity
from p2psched.node.node import open_node
from p2psched.scheduler.job import parse_job
from p2psched.scheduler.job.loader import LIBYAML, read_yaml

CELLS = ("read_libyaml", "read_pure", "check", "submit")


def job_text(tasks: int, *, varied: bool = False) -> str:
    """A job file of `tasks` echo tasks. `varied`: also YAML's other ways of writing values
    (block text, anchors and merge keys, quoted dates, non-ASCII text, comments), for a
    comparison of parsers rather than a measure."""
    lines = ["name: big", "driver: echo", "timeout: 30s", "tasks:"]
    for i in range(tasks):
        lines.append(f"  - name: item-{i:06d}")
        text = f"a quick brown fox jumps over the dog {i}"
        if varied and i % 7 == 3:
            lines += ["    input:", "      text: |", f"        {text}", "        and again"]
            lines += [f"      when: '2030-01-{i % 28 + 1:02d}'  # quoted: text, not a date"]
        elif varied and i % 11 == 5:
            lines.append(f"    input: {{<<: *base, n: {i}, text: 'café ✓ {i}', r: {i / 8}}}")
        else:
            anchor = "&base " if varied and i == 0 else ""
            lines.append(
                f'    input: {anchor}{{text: "{text}", n: {i}, ok: true, tags: [a, b], x: null}}'
            )
    return "\n".join(lines) + "\n"


def timed(f: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = f(*args, **kwargs)
    return time.perf_counter() - start, out


def cpu(f: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.process_time()
    out = f(*args, **kwargs)
    return time.process_time() - start, out


async def submitted(doc: Any, data_dir: Path) -> tuple[float, float]:
    """Seconds for a node to take the job (check it, derive, journal and store its tasks),
    and of them its CPU's."""
    async with open_node(Identity.generate(), data_dir, dht_client=True) as node:
        start, start_cpu = time.perf_counter(), time.process_time()
        job = node.jobs.submit(parse_job(doc, source="job.yaml"), doc)
        seconds = time.perf_counter() - start, time.process_time() - start_cpu
        node.jobs.cancel(job.job_id)
    return seconds


def measure(tasks: int, work: Path) -> dict[str, float]:
    path = work / f"job-{tasks}.yaml"
    path.write_text(job_text(tasks))
    text = path.read_text()
    row = {"mib": path.stat().st_size / (1 << 20), "tasks": tasks}
    row["read_pure"], _ = timed(cpu, read_yaml, text, str(path), libyaml=False)
    row["read_pure_cpu"] = _[0]
    row["read_libyaml"], (row["read_libyaml_cpu"], doc) = timed(cpu, read_yaml, text, str(path))
    row["check"], (row["check_cpu"], _) = timed(cpu, parse_job, doc, source=str(path))
    row["submit"], row["submit_cpu"] = trio.run(submitted, doc, work / f"node-{tasks}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--large", type=int, default=100_000, help="the larger file's tasks")
    args = ap.parse_args()
    assert LIBYAML, "this PyYAML has no libyaml: reinstall it from its wheel"
    with tempfile.TemporaryDirectory(prefix="bench-jobfile-") as work:
        rows = [measure(n, Path(work)) for n in (args.tasks, args.large)]
    print("Seconds, and in brackets the process's CPU seconds of them.\n")
    print("| file | tasks | read, libyaml | read, Python | check | submit to a node |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]:.2f} ({r[k + '_cpu']:.2f})" for k in CELLS]
        print(f"| {r['mib']:.1f} MiB | {r['tasks']:,} | {' | '.join(cells)} |")
    first = rows[0]
    print(
        f"jobfile load_s_libyaml={first['read_libyaml'] + first['check']:.2f} "
        f"load_s_pure={first['read_pure'] + first['check']:.2f} "
        f"submit_s={first['submit']:.2f} tasks={first['tasks']}"
    )


if __name__ == "__main__":
    main()
