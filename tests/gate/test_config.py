"""A gate's config file: its relay limits are checked, and what it would misread is
refused; its [dht] limits hold on a running gate."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched.dht import messages as m
from p2psched.dht.node import open_dht_node
from p2psched.dht.protocol import DhtConfig
from p2psched.dht.records import Record
from p2psched.gate.config import GateConfigError, check_gate_config
from p2psched.gate.relay import RelayLimits
from p2psched.identity import Identity, id_has_work
from tests.harness.processes import p2psched, running


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="circuits_per_peer"):
        RelayLimits(circuits_per_peer=0)
    with pytest.raises(ValueError, match="unknown relay limit 'circuits_per_pear'"):
        check_gate_config({"relay": {"circuits_per_pear": 3}})
    assert check_gate_config({"relay": {"bandwidth": 1e6}}).relay.bandwidth == 1e6


@pytest.mark.parametrize(
    ("doc", "said"),
    [
        # TOML's true is a bool, and a bool is an int in Python: it must not count as 1.
        ({"relay": {"reservations": True}}, "relay limit reservations: True is not a positive"),
        ({"relay": {"circuit_seconds": False}}, "relay limit circuit_seconds: False is not a"),
        # A misspelled table would leave every limit at its default without a word.
        ({"rleay": {"reservations": 4}}, "[rleay]: unknown table; known: [relay]"),
        ({"relay": 5}, "[relay] must be a table"),
    ],
)
def test_a_gate_config_refuses_what_it_would_misread(doc: dict[str, Any], said: str) -> None:
    with pytest.raises(GateConfigError) as e:
        check_gate_config(doc)
    assert said in str(e.value)


# -- its [dht] table, on a running gate ---------------------------------------------------------


async def test_a_running_gate_keeps_the_dht_limits_its_config_sets(tmp_path: Path) -> None:
    """[dht.store] max_per_publisher = 2: a third record of one publisher is refused; [dht]
    id_bits = 6 (the tests' network asks 4): a publisher whose id shows 4 bits but not 6 is
    refused, and the gate's own id shows 6."""
    config = tmp_path / "gate.toml"
    config.write_text("[dht]\nid_bits = 6\n\n[dht.store]\nmax_per_publisher = 2\n")
    args = ("gate", "--listen", "127.0.0.1:0", "--config", str(config))
    with running(*args, data=tmp_path / "g") as (_, said):
        gate_id, address = bytes.fromhex(said.split()[1]), said.split()[4]
        assert id_has_work(gate_id, 6)
        host, port = address.rsplit(":", 1)
        with trio.fail_after(60):
            async with open_dht_node(
                Identity.generate(6), host="127.0.0.1", config=DhtConfig(client=True)
            ) as client:
                assert await client.bootstrap([(host, int(port))]) == 1
                (gate,) = client.protocol.routing.closest(gate_id, 1)
                publisher = Identity.generate(6)
                answers = [await client.call(gate, m.Store(record_of(publisher))) for _ in range(3)]
                weak = Identity.generate(4)
                while id_has_work(weak.node_id, 6):
                    weak = Identity.generate(4)
                answers.append(await client.call(gate, m.Store(record_of(weak))))
    said_back = [a[1] for a in answers if a is not None and isinstance(a[1], m.Stored)]
    assert [s.ok for s in said_back] == [True, True, False, False]
    assert said_back[2].reason == "publisher over its record limit"
    assert "puzzle" in said_back[3].reason


def record_of(publisher: Identity) -> Record:
    """A record of `publisher` under a key of its own (no worker's ad: no other rule applies)."""
    expires = int((time.time() + 600) * 1000)
    return Record.create(publisher, os.urandom(32), b"v", seq=1, expires_ms=expires)


def test_a_gate_refuses_a_dht_limit_out_of_range_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text("[dht]\nstranger_rate = 0\n")
    refused = p2psched("gate", "--config", str(config), "--data-dir", str(tmp_path / "g"))
    assert refused.returncode == 2
    assert "[dht] stranger_rate: must be greater than 0, not 0" in refused.stderr
    assert "Traceback" not in refused.stderr
