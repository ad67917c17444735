"""p2psched as a user runs it: the CLI as a child process (`p2psched`, `run_at_home`), the
processes a test keeps running (`process`, `gate_and_worker`, `running_node`), the job files
it submits and the results, receipts and ledgers it reads back."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from p2psched.api.client import ControlClient
from p2psched.wire.deal import Receipt

EXE = [sys.executable, "-m", "p2psched.cli"]


def p2psched(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    """`p2psched ARGS` run to its end, as a user would; its output captured as text."""
    return subprocess.run(
        [*EXE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )


def run_at_home(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`p2psched ARGS` run to its end with its default home (P2PSCHED_HOME) under `home`,
    so it never reads or writes the user's own."""
    env = {**os.environ, "P2PSCHED_HOME": str(home / "default-home")}
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def free_udp_port() -> int:
    """A port on 127.0.0.1 that nobody uses (just now) on UDP nor on TCP: a gate or node
    takes both (its DHT and its relay), and a port free on UDP may be one end of some TCP
    connection."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free on both UDP and TCP in 100 tries")


@contextmanager
def process(*args: str, home: Path) -> Iterator[subprocess.Popen[str]]:
    """`p2psched ARGS` running, with P2PSCHED_HOME at `home` and its output on pipes; killed
    on leaving if it has not ended."""
    env = {**os.environ, "P2PSCHED_HOME": str(home)}
    with subprocess.Popen(
        [*EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as p:
        try:
            yield p
        finally:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


@contextmanager
def running(*args: str, data: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`p2psched ARGS --data-dir DATA`, once it says where its control API is: the process
    and what it said until then; stopped on leaving."""
    with subprocess.Popen(
        [*EXE, *args, "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            said = ""
            for line in proc.stdout:
                said += line
                if "control API" in line:
                    break
            assert "control API" in said, f"p2psched {args[0]} did not start: {said}"
            yield proc, said
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@contextmanager
def gate_process(folder: Path) -> Iterator[str]:
    """A gate's process (`p2psched gate`) on loopback, stopped on leaving; its address."""
    with running("gate", "--listen", "127.0.0.1:0", data=folder) as (_, said):
        yield said.split()[4]


@contextmanager
def worker_of(
    gate: str, folder: Path, reachability: str = "public", config: str = ""
) -> Iterator[tuple[subprocess.Popen[str], bytes, str]]:
    """A worker's process joined through `gate` (with `config`, TOML, if given): the process,
    its node id and the address its ad gives (its own, or its gate's relay)."""
    args = ["worker", "join", "--gate", gate, "--reachability", reachability]
    if config:  # (beside its data dir: a data dir it did not make must hold its identity)
        path = folder.with_suffix(".toml")
        path.write_text(config)
        args += ["--config", str(path)]
    with running(*args, data=folder) as (proc, said):
        found = re.search(r"worker ([0-9a-f]{64}) joined", said)
        address = re.search(r"tasks on (\S+)", said)
        assert found is not None and address is not None, said
        yield proc, bytes.fromhex(found.group(1)), address.group(1)


@contextmanager
def gate_and_worker(
    folder: Path, config: str
) -> Iterator[tuple[str, str, bytes, subprocess.Popen[str]]]:
    """A gate and a worker (`p2psched worker join`) on `config` (TOML, written to
    `folder/worker.toml`), each its own process on loopback, killed on leaving; yields the
    gate's address, the worker's address for tasks, its node id and its process."""
    gate = f"127.0.0.1:{free_udp_port()}"
    (folder / "worker.toml").write_text(config)
    with ExitStack() as stack:
        g = stack.enter_context(
            process("gate", "--listen", gate, "--data-dir", str(folder / "g"), home=folder)
        )
        assert g.stdout is not None and "listening on" in g.stdout.readline()
        args = ("worker", "join", "--gate", gate, "--config", str(folder / "worker.toml"))
        w = stack.enter_context(process(*args, "--data-dir", str(folder / "w"), home=folder))
        assert w.stdout is not None and w.stderr is not None
        lines = [w.stdout.readline()]  # what it says of itself as it joins, to its address
        assert lines[0].startswith("worker "), "".join(lines) + w.stderr.read()
        while "tasks on " not in lines[-1] and len(lines) < 12:  # (overrides add a line)
            lines.append(w.stdout.readline())
        address = lines[-1].rsplit("tasks on ", 1)[1]
        yield gate, address.strip(), bytes.fromhex(lines[0].split()[1]), w


@contextmanager
def running_node(gate: str, data: Path) -> Iterator[Path]:
    """A plain node joined to the network at `gate`, running its control API on the data dir
    `data`, until leaving; then it must stop cleanly and take its endpoint file away."""
    proc = subprocess.Popen(
        [*EXE, "node", "--gate", gate, "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (client := ControlClient.find(data)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the node did not start"
            time.sleep(0.1)
        client.close()
        yield data
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    assert ControlClient.find(data) is None  # it took its endpoint file away


def write_job(path: Path, text: str) -> Path:
    """`text` written to `path`, which is returned."""
    path.write_text(text)
    return path


def matrix_job(
    folder: Path, name: str, driver: str, template: str, n: int, extra: str = ""
) -> Path:
    """A job of `n` tasks from one template (YAML flow text), in `folder/<name>.yaml`."""
    return write_job(
        folder / f"{name}.yaml",
        f"name: {name}\ndriver: {driver}\n{extra}template:\n  input: {template}\n"
        f"matrix:\n  i: {list(range(n))}\n",
    )


def submit_json(
    job: Path, gate: str, results: Path, data_dir: Path
) -> subprocess.CompletedProcess[str]:
    """`p2psched submit JOB --gate GATE --json` run as a user would, from its own data dir."""
    return p2psched(
        "submit",
        str(job),
        "--gate",
        gate,
        "--json",
        "--results",
        str(results),
        "--data-dir",
        str(data_dir),
    )


def load_receipt(path: Path) -> tuple[Receipt, bytes]:
    """A receipt file as `submit` writes it: the receipt, and its worker's public key."""
    doc = json.loads(path.read_text())
    key = bytes.fromhex(doc.pop("worker_public_key"))
    return Receipt.from_json(doc), key


def receipts_issued(worker_dir: Path) -> list[str]:
    """The tasks a worker signed a successful receipt for, from its own ledger."""
    with sqlite3.connect(worker_dir / "state.db") as db:
        rows = db.execute(
            "SELECT task FROM ledger WHERE role = 'earned' AND kind = 'receipt' AND ok = 1"
        ).fetchall()
    return [r[0] for r in rows]
