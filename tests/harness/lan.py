"""A lab's LAN in real network namespaces: N hosts on one private /24 behind one switch.

Owns: the namespaces `lan_topology(n)` creates, `sw-<id>` (a bridge: the switch) and
`lan<i>-<id>` (host i, at 10.79.0.<i+1>, a veth to the switch), and what runs inside them.
Promises: as `netns.nat_topology()`: it yields only a complete LAN, a failing command raises
`NetnsError` naming it, and on the way out, whatever happened, everything still running inside
is killed and every namespace deleted (veths die with them; nothing is ever made in the root
namespace).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.harness.netns import ip_command, remove_namespaces, run_checked, unused_suffix

LAN_PREFIX = "10.79.0"  # a lab's private /24 (RFC 1918)
MAX_HOSTS = 250


@dataclass(frozen=True, slots=True)
class Lan:
    """The names and addresses of one `lan_topology()`: host i is `hosts[i]` at `ips[i]`."""

    id: str
    switch: str
    hosts: tuple[str, ...]

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(f"{LAN_PREFIX}.{i + 1}" for i in range(len(self.hosts)))

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.switch, *self.hosts)


def _names(suffix: str, n: int) -> tuple[str, ...]:
    return (f"sw-{suffix}", *(f"lan{i}-{suffix}" for i in range(n)))


def _build(lan: Lan, ip: str) -> None:
    # A few batches rather than one command per step: building 33 hosts stays under a second.
    batch = [f"netns add {ns}" for ns in lan.namespaces]
    # Each veth is made with both ends already in their namespaces: none is ever left in the
    # root namespace, whatever fails after.
    batch += [
        f"link add h{i}x{lan.id} netns {host} type veth peer name s{i}x{lan.id} netns {lan.switch}"
        for i, host in enumerate(lan.hosts)
    ]
    run_checked([ip, "-batch", "-"], input="\n".join(batch) + "\n")
    switch = ["link set lo up", "link add br0 type bridge", "link set br0 up"]
    for i in range(len(lan.hosts)):
        switch += [f"link set s{i}x{lan.id} master br0", f"link set s{i}x{lan.id} up"]
    run_checked([ip, "-n", lan.switch, "-batch", "-"], input="\n".join(switch) + "\n")
    for i, (host, addr) in enumerate(zip(lan.hosts, lan.ips, strict=True)):
        steps = [
            "link set lo up",
            f"addr add {addr}/24 dev h{i}x{lan.id}",
            f"link set h{i}x{lan.id} up",
        ]
        run_checked([ip, "-n", host, "-batch", "-"], input="\n".join(steps) + "\n")


@contextmanager
def lan_topology(n: int) -> Iterator[Lan]:
    """Create the switch and `n` hosts (see the module docstring), yield their names, and
    remove them on the way out, whatever happened."""
    if not 1 <= n <= MAX_HOSTS:
        raise ValueError(f"a LAN of {n} hosts: choose 1..{MAX_HOSTS}")
    ip = ip_command()
    suffix = unused_suffix(ip, lambda x: _names(x, n))
    names = _names(suffix, n)
    lan = Lan(id=suffix, switch=names[0], hosts=names[1:])
    try:
        _build(lan, ip)
        yield lan
    finally:
        remove_namespaces(ip, lan.namespaces)
