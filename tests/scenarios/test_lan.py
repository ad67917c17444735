"""A lab on one private /24: 31 DHT nodes, each a process in its own network namespace (see
tests/harness/lan.py), find each other in full, in a number of queries that does not grow with
their number. Needs root; skipped with the reason otherwise. The time itself: bench/lan.py."""

from __future__ import annotations

import json
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


@pytest.fixture
def lan() -> Iterator[Lan]:
    reason = netns.can_make_namespaces()
    if reason is not None:
        pytest.skip(reason)
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
