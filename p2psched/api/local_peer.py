"""Which local user a loopback TCP peer is: the uid that owns the peer's socket, as the kernel
lists it in /proc/net/tcp and /proc/net/tcp6 (what identd answers from).

Owns: `owner_of`. Promises: a uid only for a socket whose two ends are exactly the connection's
(the peer's address and port, then ours); None when it cannot tell (no /proc, the peer gone,
an address that is not IP), which callers take as "not known to be one of ours".
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def owner_of(peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    """The uid that owns the socket at `peer` connected to `ours`, if this host has it."""
    try:
        want = (_key(*peer), _key(*ours))
    except ValueError:
        return None
    for table in _TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8:
                continue
            try:
                local, remote = _parse(fields[1]), _parse(fields[2])
            except ValueError:
                continue
            if (local, remote) == want:
                return int(fields[7])
    return None


def _key(host: str, port: int) -> tuple[ipaddress.IPv6Address, int]:
    """An address as one kind (IPv4 as IPv4-mapped IPv6), so that a tcp6 socket's view of an
    IPv4 peer compares equal to it."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv4Address):
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")
    return ip, int(port)


def _parse(field: str) -> tuple[ipaddress.IPv6Address, int]:
    """`0100007F:1F90` (tcp) or 32 hex digits and a port (tcp6): the kernel writes each 32-bit
    word of the address in host byte order (little-endian here)."""
    address, _, port = field.partition(":")
    raw = bytes.fromhex(address)
    if len(raw) not in (4, 16):
        raise ValueError(field)
    # each 32-bit word reversed back to network order
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    return _key(str(ip), int(port, 16))
