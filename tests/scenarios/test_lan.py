"""A lab on one private /24: 31 DHT nodes, each a process in its own network namespace (see
tests/harness/lan.py), find each other in full, in a number of queries that does not grow with
their number. Needs root; skipped with the reason otherwise. The time itself: bench/lan.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from p2psched.dht.protocol import DhtConfig
from tests.harness import netns
from tests.harness.lan import Lan, lan_topology
from tests.harness.netns import Proc, check_in

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = 31
PORT = 4000
START_S = 45.0
LAB_NODE = [sys.executable, "-m", "tests.harness.lab_node"]


def _skip_unless_namespaces() -> None:
    reason = netns.can_make_namespaces()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def lan() -> Iterator[Lan]:
    _skip_unless_namespaces()
    with lan_topology(MEMBERS + 1) as built:  # the last host is the fresh node's
        yield built


@contextmanager
def lab(lan: Lan, members: int, *flags: str) -> Iterator[list[Proc]]:
    """`members` nodes on hosts 0.., joined through the first, each with its record
    published; killed on the way out."""
    gate = f"{lan.ips[0]}:{PORT}"
    procs: list[Proc] = []
    try:
        for i in range(members):
            join = ["--bootstrap", gate] if i else []
            argv = [*LAB_NODE, "--listen", f"{lan.ips[i]}:{PORT}", *join, *flags]
            procs.append(Proc(f"member {i}", lan.hosts[i], argv, cwd=ROOT))
            if i == 0:
                procs[0].wait_for("^ready", START_S)
        for proc in procs:
            proc.wait_for("^ready", START_S)
        yield procs
    finally:
        for proc in procs:
            proc.kill()


def probe(lan: Lan, *flags: str) -> dict[str, Any]:
    """A fresh node on the last host joins through the first and looks the lab up once."""
    argv = [*LAB_NODE, "--listen", f"{lan.ips[-1]}:{PORT}", "--probe"]
    out = check_in(
        lan.hosts[-1], [*argv, "--bootstrap", f"{lan.ips[0]}:{PORT}", *flags], cwd=ROOT, timeout=60
    )
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def test_a_lab_on_one_private_slash_24_finds_all_of_itself(lan: Lan) -> None:
    with lab(lan, MEMBERS):
        found = probe(lan)
        capped = probe(lan, "--cap-lan")  # the rule before: LAN peers counted per /24
    assert found["records"] == MEMBERS, found  # every node of the lab, from one lookup
    # Its table took every member it heard from, more than one /24's cap of them.
    assert found["refused_by_ip"] == 0 and found["routing"] >= DhtConfig().k, found
    assert found["timed_out"] == 0, found  # no query waited on a timeout
    # What keeps the time flat: the lookup that finds the whole lab ends within two rounds of
    # alpha queries, and none of them waits on a timeout, whatever the size of the lab.
    assert found["value_queries"] <= 2 * DhtConfig().alpha, found
    # Under the old rule a fresh node holds at most 10 of them.
    limit = DhtConfig().table_ip_limit
    assert limit is not None and capped["routing"] <= limit and capped["refused_by_ip"] > 0, capped


# A UDP datagram from one host to another's echo port is refused (ICMP), which proves the path.
REACH = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect((sys.argv[1], 9))
s.send(b"x")
try:
    s.recv(1)
except ConnectionRefusedError:
    print("reached")
except OSError as e:
    print(type(e).__name__, e)
"""


def test_the_lan_is_gone_afterwards_even_after_a_failure() -> None:
    _skip_unless_namespaces()
    with pytest.raises(RuntimeError, match="in the middle"):
        with lan_topology(3) as failed:
            names = failed.namespaces
            left_running = netns.run_in(failed.hosts[1], ["sleep", "600"])
            reached = check_in(failed.hosts[2], [sys.executable, "-c", REACH, failed.ips[1]])
            assert reached.stdout.strip() == "reached"  # one switch joins the hosts
            raise RuntimeError("in the middle")
    assert left_running.wait(timeout=10) == -signal.SIGKILL
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert not [ns for ns in names if ns in out.stdout.split()], out.stdout
