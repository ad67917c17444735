"""Where a worker can be reached, as its ad says: "HOST:PORT" directly, or
"GATE_HOST:PORT/relay/<its node id>" through a gate's circuit (`wire.hop`).

Owns: writing and reading those addresses (and HOST:PORT itself).
Promises: no I/O and no trio, so the sans-I/O cores can read them; a malformed address raises
ValueError naming it.
"""

from __future__ import annotations

import ipaddress

RELAY_MARK = "/relay/"


def host_port(host: str, port: int) -> str:
    """HOST:PORT as people and `cli.parse_hostport` write it: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def relay_address(gate: str, worker: bytes) -> str:
    """How a worker reached through the gate at `gate` ("HOST:PORT") is advertised."""
    return f"{gate}{RELAY_MARK}{worker.hex()}"


def parse_relay_address(address: str) -> tuple[str, bytes] | None:
    """(gate "HOST:PORT", worker id) of a relay address; None for a direct "HOST:PORT".
    ValueError when it claims to be one and is not."""
    gate, mark, worker = address.partition(RELAY_MARK)
    if not mark:
        return None
    try:
        node_id = bytes.fromhex(worker)
    except ValueError:
        node_id = b""
    if len(node_id) != 32 or not gate:
        raise ValueError(f"relay address {address!r} is not HOST:PORT{RELAY_MARK}<64 hex digits>")
    return gate, node_id


def split_host_port(address: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT" or "[v6]:PORT"; ValueError naming the address if not."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def is_relayed(address: str) -> bool:
    """Whether `address` reaches its worker through a gate (well-formed or not)."""
    return RELAY_MARK in address


def subnet(ip: str) -> str:
    """The unit the per-address limit counts: the address for IPv4 (a home router's one),
    the /56 for IPv6 (a home is often given a /56, and may use any address in it)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{ip}/56", strict=False))
    return ip
