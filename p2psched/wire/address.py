"""Where a worker can be reached, as its ad says: "HOST:PORT" directly, or
"GATE_HOST:PORT/relay/<its node id>" through a gate's circuit (`wire.hop`); and what an IP
address says of where it is (its network at a given width, its kind of range).

Owns: writing and reading those addresses (and HOST:PORT itself), the network prefixes that
per-source limits count by, and which ad addresses a node may keep.
Promises: no I/O and no trio, so the sans-I/O cores can read them; a malformed address raises
ValueError naming it; an ad address is an IP literal, never a host name.
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


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`host` as an IP address (an IPv4 peer seen on a dual-stack socket, IPv4-mapped, as
    IPv4); None for a host that is no IP literal."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def prefix(host: str, v4_bits: int, v6_bits: int) -> str | None:
    """The network `host` is in, `v4_bits` wide for IPv4 and `v6_bits` for IPv6 (an IPv4 peer
    seen on a dual-stack socket counts as IPv4); None for a host that is no IP literal."""
    ip = ip_of(host)
    if ip is None:
        return None
    bits = v4_bits if ip.version == 4 else v6_bits
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def subnet(ip: str) -> str:
    """The unit the per-address limit counts: the address for IPv4 (a home router's one),
    the /56 for IPv6 (a home is often given a /56, and may use any address in it)."""
    net = prefix(ip, 32, 56)
    return ip if net is None else net.removesuffix("/32")


def range_kind(host: str) -> str:
    """ "loopback", "private" (RFC 1918, link-local, unique-local, CGNAT), "unroutable"
    (multicast, unspecified, reserved) or "public" for an IP literal; "name" for anything else.
    An IPv6 address that carries an IPv4 one (6to4, NAT64) is of the kind of the IPv4 one: it
    reaches it."""
    ip = ip_of(host)
    if ip is None:
        return "name"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.is_loopback:
        return "loopback"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "unroutable"
    return "private" if ip.is_private or ip in _CGNAT else "public"


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_kind(address: str) -> str:
    """The `range_kind` of the host an ad address is dialled at: its own, or its gate's for a
    relay address. ValueError naming a malformed one."""
    relayed = parse_relay_address(address)
    return range_kind(split_host_port(relayed[0] if relayed is not None else address)[0])


def ad_address_problem(address: str, seen_from: str | None) -> str | None:
    """Why a node seeing an ad's publisher at host `seen_from` must not keep `address` from it
    (None: it may). An address is an IP literal or a relay address through one, never a host
    name (an ad would have a node resolve and dial any name); a loopback or private one is kept
    only by a node that sees the publisher in the same kind of range (a devnet, a lab's LAN), so
    an ad cannot have an internet node dial into someone's private network. `seen_from` None
    checks the form only (the publisher checking its own ad)."""
    try:
        kind = address_kind(address)
    except ValueError as e:
        return str(e)
    if kind == "name":
        return f"address {address!r} names a host: an ad carries IP addresses only"
    if kind == "unroutable":
        return f"address {address!r} is no one's (multicast, unspecified or reserved)"
    if seen_from is not None and kind != "public" and range_kind(seen_from) != kind:
        return f"address {address!r} is {kind}, and its publisher is not seen from one"
    return None
