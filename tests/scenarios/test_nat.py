"""Workers behind a NAT router take work through a relay gate: real network namespaces (see
tests/harness/netns.py), real processes, as a user runs them. Needs root; skipped with the reason
otherwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import netns
from tests.harness.netns import (
    NatTopology,
    Proc,
    check_in,
    connect_from,
    nat_topology,
    tcp_listener,
)
from tests.harness.processes import EXE, receipts_issued

ROOT = Path(__file__).resolve().parents[2]


def _skip_unless_namespaces() -> None:
    reason = netns.can_make_namespaces()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def topology() -> Iterator[NatTopology]:
    _skip_unless_namespaces()
    with nat_topology() as t:
        yield t


# -- the harness itself: no p2psched code -------------------------------------------------------


def test_without_root_the_reason_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns.can_make_namespaces() == netns.NEEDS_ROOT


def test_the_private_side_reaches_out_masqueraded(topology: NatTopology) -> None:
    t = topology
    with tcp_listener(t.pub, t.pub_ip) as listener:
        assert connect_from(t.priv, t.pub_ip, listener.port) is None
        # the public side sees the router's public address, not the private one
        assert listener.peers(want=1, timeout=10) == [t.router_public_ip]


def test_the_public_side_cannot_reach_in_because_of_the_router(topology: NatTopology) -> None:
    t = topology
    route = check_in(t.pub, [str(netns.tool("ip")), "route", "get", t.priv_ip]).stdout
    assert f"via {t.router_public_ip}" in route  # there is a route: only the router's rules stop it
    with tcp_listener(t.priv, t.priv_ip) as listener:
        assert connect_from(t.priv, t.priv_ip, listener.port) is None  # it does listen
        assert connect_from(t.rtr, t.priv_ip, listener.port) is None  # and the router reaches it
        refused = connect_from(t.pub, t.priv_ip, listener.port, timeout=2.0)
        assert refused is not None, "the public side connected to the private LAN"
        assert listener.peers(want=2, timeout=1) == [t.priv_ip, t.router_private_ip]
        # The same connection with the router's FORWARD rules taken out goes through: it was
        # them, and not routing, that kept it out.
        t.allow_inbound()
        assert connect_from(t.pub, t.priv_ip, listener.port) is None
        assert listener.peers(want=3, timeout=10)[-1] == t.pub_ip


def test_the_namespaces_are_gone_afterwards_even_after_a_failure() -> None:
    _skip_unless_namespaces()
    with nat_topology() as t:
        names = t.namespaces
        listed = check_in(t.pub, ["ip", "netns", "list"]).stdout
        assert all(ns in listed for ns in names)
        left_running = netns.run_in(t.priv, ["sleep", "600"])  # not stopped by its starter
    assert left_running.wait(timeout=10) == -signal.SIGKILL
    with pytest.raises(RuntimeError, match="in the middle"):
        with nat_topology() as failed:
            failed_names = failed.namespaces
            raise RuntimeError("in the middle")
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert not [ns for ns in (*names, *failed_names) if ns in out.stdout.split()], out.stdout


# -- p2psched through the relay ---------------------------------------------------------------

GATE1_PORT, GATE2_PORT = 4001, 4002
WORKER_PORTS = (5001, 5002)
AD_TTL = 20.0
WORKER_TOML = '[worker]\nslots = 2\ndrivers = ["echo", "sleep"]\n'


def WORKER_DIRS(tmp_path: Path) -> list[Path]:  # noqa: N802 - a constant, per test
    return [tmp_path / f"w{i}" for i in range(len(WORKER_PORTS))]


START_S = 60.0


def matrix_job(folder: Path, name: str, n: int) -> Path:
    """`n` echo tasks, each handing back its index and a greeting."""
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ndriver: echo\ntimeout: 30s\nretries: 2\n"
        f"template:\n  input: {{n: '{{i}}', text: 'hello {{i}}'}}\n"
        f"matrix:\n  i: {list(range(n))}\n"
    )
    return path


def test_job_completes_through_relay_and_survives_gate_loss(
    topology: NatTopology, tmp_path: Path
) -> None:
    t = topology
    gate1, gate2 = f"{t.pub_ip}:{GATE1_PORT}", f"{t.pub_ip}:{GATE2_PORT}"
    env = {**os.environ, "P2PSCHED_HOME": str(tmp_path / "home")}
    procs: list[Proc] = []

    def start(name: str, ns: str, *args: str) -> Proc:
        proc = Proc(name, ns, [*EXE, *args], cwd=ROOT, env=env)
        procs.append(proc)
        return proc

    def cli(ns: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return check_in(ns, [*EXE, *args], timeout=timeout, check=False, cwd=ROOT, env=env)

    def ok(out: subprocess.CompletedProcess[str]) -> str:
        assert out.returncode == 0, f"`{' '.join(out.args[4:])}` exited {out.returncode}:\n" + (
            out.stdout + out.stderr
        )
        return out.stdout

    def gate_status(name: str) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(
            ok(cli(t.pub, "gate", "status", "--data-dir", str(tmp_path / name), "--json"))
        )
        return status

    def submit(job: Path, results: Path, while_running: Callable[[], None]) -> dict[str, Any]:
        proc = start(
            f"submit {job.stem}",
            t.pub,
            "submit",
            str(job),
            "--data-dir",
            str(tmp_path / "node"),
            "--json",
            "--results",
            str(results),
        )
        deadline = time.monotonic() + 180
        while proc.popen.poll() is None:
            assert time.monotonic() < deadline, f"{job.stem} did not finish in 180s"
            while_running()
            time.sleep(0.2)
        assert proc.wait(timeout=10) == 0, f"submit {job.stem} failed"
        summary: dict[str, Any] = json.loads(proc.stdout)
        return summary

    def check_results(folder: Path, n: int, workers: set[str]) -> None:
        results = sorted(folder.glob("[0-9]*[0-9].json"))
        assert len(results) == n, [p.name for p in folder.iterdir()]
        for path in results:
            r = json.loads(path.read_text())
            assert r["state"] == "completed", r
            assert r["output"] == {"n": r["index"], "text": f"hello {r['index']}"}, r
        receipts = list(folder.glob("*.receipt.json"))
        assert len(receipts) == n, [p.name for p in folder.iterdir()]
        for path in receipts:
            assert json.loads(path.read_text())["worker"] in workers  # only the private ones

    try:
        # 1. Two gates on the public side; two workers behind the NAT; a scheduler outside.
        g1 = start("gate1", t.pub, "gate", "--listen", gate1, "--data-dir", str(tmp_path / "g1"))
        g1.wait_for("listening on", START_S)
        start(
            "gate2",
            t.pub,
            "gate",
            "--listen",
            gate2,
            "--bootstrap",
            gate1,
            "--data-dir",
            str(tmp_path / "g2"),
        ).wait_for("listening on", START_S)
        workers: dict[str, Proc] = {}
        worker_toml = tmp_path / "worker.toml"
        worker_toml.write_text(WORKER_TOML)
        for i, port in enumerate(WORKER_PORTS):
            w = start(
                f"worker{i}",
                t.priv,
                "worker",
                "join",
                "--gate",
                gate1,
                "--gate",
                gate2,
                "--listen",
                f"{t.priv_ip}:{port}",
                "--ad-ttl",
                f"{AD_TTL:g}",
                "--config",
                str(worker_toml),
                "--data-dir",
                str(tmp_path / f"w{i}"),
            )
            workers[w.wait_for(r"^worker ([0-9a-f]+) joined through", START_S).group(1)] = w

        # 2. Each found out it is private and advertises a relay address on gate1; its own
        # address listens, but not for the public side.
        for (wid, w), port in zip(workers.items(), WORKER_PORTS):
            assert w.wait_for(r"reachability: (\w+)", START_S).group(1) == "private", wid
            address = w.wait_for(r"tasks on (\S+)", START_S).group(1)
            assert address.startswith(f"{gate1}/relay/"), address
            assert all(c in "0123456789abcdef" for c in address.rsplit("/", 1)[1]), address
            assert connect_from(t.priv, t.priv_ip, port) is None, f"{wid} does not listen"
            assert connect_from(t.pub, t.priv_ip, port) is not None, f"{wid} reachable directly"
        node = start(
            "node",
            t.pub,
            "node",
            "--gate",
            gate1,
            "--gate",
            gate2,
            "--listen",
            f"{t.pub_ip}:0",
            "--data-dir",
            str(tmp_path / "node"),
        )
        node.wait_for("control API", START_S)

        # 3. A job: every task completes, on the private workers, through gate1's relay.
        seen: list[dict[str, Any]] = []
        summary = submit(
            matrix_job(tmp_path, "relayed", 8),
            tmp_path / "results",
            lambda: seen.append(gate_status("g1")),
        )
        assert summary["completed"] == 8 and summary["failed"] == 0, summary
        check_results(tmp_path / "results" / "relayed", 8, set(workers))
        seen.append(gate_status("g1"))
        for wid in workers:
            assert wid in json.dumps(seen[-1]["reservations"]), (wid, seen[-1])
        # The scheduler closes its channels once no job needs them, so the circuits may be
        # gone by the time a sample is taken; the gate's counters keep what it carried.
        counters = seen[-1]["counters"]
        assert counters.get("circuits_opened", 0) >= 2, f"no circuit on gate1: {seen}"
        assert counters.get("bytes_relayed", 0) > 0, seen[-1]
        assert counters.get("dialbacks_unreachable", 0) >= 2, seen[-1]

        # 4. gate1 dies (SIGKILL) while a job's four tasks run on the workers through it.
        # Each worker moves its reservation to gate2 and says so in a new ad; the scheduler
        # finds it there, the tasks finish where they ran, and their results arrive.
        naps = tmp_path / "naps.yaml"
        naps.write_text(
            "name: naps\ndriver: sleep\ntimeout: 60s\nretries: 2\ntasks:\n"
            + "  - input: {seconds: 4}\n" * 4
        )
        began = time.monotonic()
        lost = 0.0

        def kill_gate1_once_running() -> None:
            nonlocal lost
            if not lost and time.monotonic() - began > 2.0:  # the 4-second naps have started
                g1.popen.send_signal(signal.SIGKILL)
                g1.wait(timeout=10)
                lost = time.monotonic()

        summary = submit(naps, tmp_path / "results", kill_gate1_once_running)
        assert lost and summary["completed"] == 4 and summary["failed"] == 0, summary
        assert time.monotonic() - lost > 0.5, "the job ended before the gate died"
        ran = [t for d in WORKER_DIRS(tmp_path) for t in receipts_issued(d)]
        naps_ran = sorted(t for t in ran if t.startswith(summary["job"] + "/"))
        # Each ran once, on the worker it was first sent to: none was placed again elsewhere.
        assert naps_ran == [f"{summary['job']}/{i}" for i in range(4)], naps_ran

        # Within one ad TTL each worker advertises a relay address on gate2.
        moved: set[str] = set()
        while moved != set(workers):
            assert time.monotonic() - lost < 60, f"ads still not on gate2 (moved: {moved})"
            listing = cli(
                t.pub,
                "workers",
                "--gate",
                gate2,
                "--json",
                "--data-dir",
                str(tmp_path / "asker"),
                timeout=60,
            )
            ads = [json.loads(line) for line in ok(listing).splitlines()]
            moved = {
                ad["node_id"]
                for ad in ads
                if any(a.startswith(f"{gate2}/relay/") for a in ad["addresses"])
            }
            time.sleep(0.5)
        took = time.monotonic() - lost
        assert took <= AD_TTL + 5, f"the ads moved to gate2 only after {took:.1f}s"

        # A second job runs through gate2 (gate1 is gone and the workers cannot be dialled).
        summary = submit(matrix_job(tmp_path, "again", 4), tmp_path / "results", lambda: None)
        assert summary["completed"] == 4 and summary["failed"] == 0, summary
        check_results(tmp_path / "results" / "again", 4, set(workers))
        reservations = json.dumps(gate_status("g2")["reservations"])
        assert all(wid in reservations for wid in workers), reservations
    except Exception as e:
        said = str(e)
        logs = [p.describe() for p in procs]
        raise AssertionError("\n".join([said, *(log for log in logs if log not in said)])) from e
    finally:
        for proc in reversed(procs):
            proc.kill()
