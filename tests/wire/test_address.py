"""Where a worker can be reached: a relay address through a gate, and what is not one."""

from __future__ import annotations

import pytest

from p2psched.identity import Identity
from p2psched.wire.address import parse_relay_address, relay_address


def test_relay_addresses() -> None:
    w = Identity.generate().node_id
    address = relay_address("10.77.0.1:4001", w)
    assert parse_relay_address(address) == ("10.77.0.1:4001", w)
    assert parse_relay_address("10.77.0.1:4001") is None
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_relay_address("10.77.0.1:4001/relay/zz")
