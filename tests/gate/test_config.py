"""A gate's config file: its relay limits are checked, and what it would misread is
refused."""

from __future__ import annotations

from typing import Any

import pytest

from p2psched.gate.config import GateConfigError, check_gate_config
from p2psched.gate.relay import RelayLimits


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
