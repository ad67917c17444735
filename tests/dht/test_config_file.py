"""The [dht] table of a node's config file: its defaults are the code's, its values reach the
node's `DhtConfig`, a value out of range is refused naming its table and field (in a gate's
config and a worker's alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from p2psched.dht.config_file import DhtSettings
from p2psched.dht.protocol import DhtConfig
from p2psched.dht.records import StoreLimits
from p2psched.dht.routing import TrustedNetworks
from p2psched.gate.config import GateConfigError, check_gate_config
from p2psched.worker.config import ConfigError, load_config


def test_without_a_dht_table_a_node_runs_with_todays_limits() -> None:
    made = DhtSettings().dht_config(client=True, trusted=TrustedNetworks())
    assert made == DhtConfig(client=True)
    assert check_gate_config({}).dht == DhtSettings()


def test_the_tables_values_make_the_nodes_dht_config() -> None:
    table = {"stranger_rate": 8, "stranger_total_burst": 100.0, "store": {"max_bytes": 2 << 20}}
    made = check_gate_config({"dht": table}).dht.dht_config(client=False, trusted=TrustedNetworks())
    assert (made.stranger_rate, made.stranger_total_burst) == (8.0, 100.0)
    assert made.store == StoreLimits(max_bytes=2 << 20)


BAD = [
    ({"stranger_rate": 0}, "[dht] stranger_rate: must be greater than 0, not 0"),
    ({"stranger_burst": True}, "[dht] stranger_burst: must be a valid number, not True"),
    ({"id_bits": 33}, "[dht] id_bits: must be less than or equal to 32, not 33"),
    ({"store": {"max_bytes": 4096}}, "[dht.store] max_bytes: must be greater than or equal to"),
    ({"store": {"max_ttl": 1e9}}, "[dht.store] max_ttl: must be less than or equal to 604800"),
    (
        {"store": {"max_per_key": 10}},
        "[dht.store]: max_per_prefix_per_key (64) must be at most max_per_key (10)",
    ),
    ({"store": {"max_per_pub": 2}}, "[dht.store] max_per_pub: unknown field; known: max_per_key"),
    ({"stranger_rte": 2}, "[dht] stranger_rte: unknown field; known: id_bits, stranger_rate"),
    ({"store": 3}, "[dht] store: must be a table"),
]


@pytest.mark.parametrize(("table", "said"), BAD)
def test_a_gate_config_refuses_a_bad_dht_value_naming_it(table: dict[str, Any], said: str) -> None:
    with pytest.raises(GateConfigError) as e:
        check_gate_config({"dht": table})
    assert said in str(e.value)


def test_a_worker_config_refuses_a_bad_dht_value_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text("[dht.store]\nmax_per_publisher = 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: [dht.store] max_per_publisher: must be greater than or " + (
        "equal to 1, not 0"
    )
    path.write_text("[dht]\nid_bits = 9\n[dht.store]\nmax_per_publisher = 2\n")
    dht = load_config(path).dht
    assert (dht.id_bits, dht.store.limits().max_per_publisher) == (9, 2)
