"""Real Linux network namespaces for tests: a public segment, a home NAT router, a private LAN.

Owns: the three namespaces `nat_topology()` creates, `pub-<id>`, `rtr-<id>` and `priv-<id>`
(and so the veths, routes and iptables rules inside them, which die with them), and the
processes started in them through `run_in`, `Proc`, `tcp_listener` and `connect_from`.

Promises:
- `nat_topology()` yields only a complete topology; every command it runs is checked, and a
  failing one raises `NetnsError` naming the command and its stderr. On the way out, whatever
  happened, it kills any process still inside its namespaces and deletes them, so nothing is
  left behind: no namespace, veth, route or rule.
- Names carry this process's pid (and a counter), so parallel runs and leftovers of dead runs
  do not clash; an existing namespace is never reused or deleted.
- Every command has a timeout and every wait is bounded.
- `can_make_namespaces()` answers None when the topology can be built here, else why not
  (for `pytest.skip`, so a test that cannot run says so instead of passing).

The topology, as a home connection looks from outside:

    pub-<id>   10.77.0.1/24, lo; a route to 10.78.0.0/24 via 10.77.0.2
      | veth
    rtr-<id>   10.77.0.2/24 | 10.78.0.1/24; forwards, MASQUERADEs the private side out of its
      | veth   public veth, drops what the public side opens toward the private one
    priv-<id>  10.78.0.2/24, lo; default route via 10.78.0.1
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

NEEDS_ROOT = "needs root to create network namespaces (CI runs as root)"
COMMAND_TIMEOUT_S = 30.0
PUBLIC_NET = "10.77.0.0/24"
PRIVATE_NET = "10.78.0.0/24"

_counter = itertools.count()


class NetnsError(Exception):
    """A command that builds or tears down the topology failed; the message has the command
    and its stderr."""


class WaitError(Exception):
    """A process did not print what was waited for in time, or exited first; the message has
    everything it printed."""


def tool(name: str) -> str | None:
    """The full path of a system command, looking in the sbin folders too (a root shell's
    PATH may lack them)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(name, path=path)


def run_checked(
    argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S, input: str | None = None
) -> str:
    """Run a topology command (`input` on its stdin: an `ip -batch -` script); its stdout, or
    `NetnsError` with the command and stderr."""
    shown = " ".join(argv)
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **stdin)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"`{shown}` failed: {e}") from None
    if out.returncode != 0:
        raise NetnsError(f"`{shown}` exited {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def can_make_namespaces() -> str | None:
    """None when `nat_topology()` can be built on this machine, else the reason it cannot."""
    if os.geteuid() != 0:
        return NEEDS_ROOT
    ip = tool("ip")
    if ip is None:
        return "the `ip` command (iproute2) is not installed"
    if tool("iptables") is None:
        return "the `iptables` command is not installed (apt-get install iptables)"
    probe = f"p2psched-probe-{os.getpid()}"
    try:
        run_checked([ip, "netns", "add", probe])
    except NetnsError as e:
        return f"cannot create a network namespace: {e}"
    try:
        run_checked([ip, "netns", "del", probe])
    except NetnsError as e:
        return f"cannot delete a network namespace: {e}"
    return None


def ip_command() -> str:
    ip = tool("ip")
    if ip is None:
        raise NetnsError("the `ip` command (iproute2) is not installed")
    return ip


def run_in(ns: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start `argv` inside namespace `ns` (`ip netns exec` replaces itself with it, so the
    process's pid is the command's own)."""
    return subprocess.Popen([ip_command(), "netns", "exec", ns, *argv], **popen)


def check_in(
    ns: str,
    argv: Sequence[str],
    *,
    timeout: float = COMMAND_TIMEOUT_S,
    check: bool = True,
    **run: Any,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to its end inside namespace `ns`, its output captured as text. With `check`,
    a nonzero exit raises `NetnsError` with the command and its stderr. A timeout raises
    `subprocess.TimeoutExpired` (the command is killed)."""
    out = subprocess.run(
        [ip_command(), "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **run,
    )
    if check and out.returncode != 0:
        raise NetnsError(
            f"`{' '.join(argv)}` in {ns} exited {out.returncode}: {out.stderr.strip()}"
        )
    return out


@dataclass(frozen=True, slots=True)
class NatTopology:
    """The names and addresses of one `nat_topology()`."""

    id: str
    pub: str  # the public internet: gates and schedulers
    rtr: str  # the home router
    priv: str  # the private LAN behind it: workers
    pub_if: str  # in pub, toward the router
    rtr_public_if: str  # in rtr, toward pub
    rtr_private_if: str  # in rtr, toward priv
    priv_if: str  # in priv, toward the router
    pub_ip: str = "10.77.0.1"
    router_public_ip: str = "10.77.0.2"
    router_private_ip: str = "10.78.0.1"
    priv_ip: str = "10.78.0.2"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.pub, self.rtr, self.priv)

    def allow_inbound(self) -> None:
        """Flush the router's FORWARD rules, so that the public side can open connections to
        the private one (still routed, not masqueraded): for a test showing that it is those
        rules, not a missing route, that keep the private side unreachable."""
        iptables = tool("iptables")
        assert iptables is not None
        check_in(self.rtr, [iptables, "-F", "FORWARD"])


def unused_suffix(ip: str, names: Callable[[str], Iterable[str]]) -> str:
    """A suffix, carrying this process's pid, for which none of `names(suffix)` is taken."""
    taken = set(run_checked([ip, "netns", "list"]).split())
    while True:
        suffix = f"{os.getpid()}x{next(_counter)}"
        if not set(names(suffix)) & taken:
            return suffix


def _build(t: NatTopology, ip: str, iptables: str) -> None:
    for ns in t.namespaces:
        run_checked([ip, "netns", "add", ns])
    # Each veth pair is made with both ends already in their namespaces: none is ever left
    # in the root namespace, whatever fails after.
    for (end, ns), (peer, peer_ns) in (
        ((t.pub_if, t.pub), (t.rtr_public_if, t.rtr)),
        ((t.rtr_private_if, t.rtr), (t.priv_if, t.priv)),
    ):
        run_checked(
            [ip, "link", "add", end, "netns", ns, "type", "veth"]
            + ["peer", "name", peer, "netns", peer_ns]
        )

    def in_ns(ns: str, *argv: str) -> None:
        run_checked([ip, "netns", "exec", ns, *argv])

    in_ns(t.pub, ip, "link", "set", "lo", "up")
    in_ns(t.pub, ip, "addr", "add", f"{t.pub_ip}/24", "dev", t.pub_if)
    in_ns(t.pub, ip, "link", "set", t.pub_if, "up")
    # A route to the private LAN, so that only the router's rules make it unreachable.
    in_ns(t.pub, ip, "route", "add", PRIVATE_NET, "via", t.router_public_ip)

    in_ns(t.rtr, ip, "link", "set", "lo", "up")
    in_ns(t.rtr, ip, "addr", "add", f"{t.router_public_ip}/24", "dev", t.rtr_public_if)
    in_ns(t.rtr, ip, "addr", "add", f"{t.router_private_ip}/24", "dev", t.rtr_private_if)
    in_ns(t.rtr, ip, "link", "set", t.rtr_public_if, "up")
    in_ns(t.rtr, ip, "link", "set", t.rtr_private_if, "up")
    sysctl = tool("sysctl")
    if sysctl is not None:
        in_ns(t.rtr, sysctl, "-w", "net.ipv4.ip_forward=1")
    else:  # procps missing: the same knob, written directly (per namespace)
        in_ns(t.rtr, sys.executable, "-c", "open('/proc/sys/net/ipv4/ip_forward','w').write('1')")
    forwarding = run_checked([ip, "netns", "exec", t.rtr, "cat", "/proc/sys/net/ipv4/ip_forward"])
    if forwarding.strip() != "1":
        raise NetnsError(f"ip_forward in {t.rtr} reads {forwarding.strip()!r} after setting it")
    rules = [
        ["-t", "nat", "-A", "POSTROUTING", "-s", PRIVATE_NET, "-o", t.rtr_public_if]
        + ["-j", "MASQUERADE"],
        # A home router: replies to what the inside opened come back in ...
        ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        # ... and nothing the outside opens does.
        ["-A", "FORWARD", "-i", t.rtr_public_if, "-o", t.rtr_private_if]
        + ["-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"],
        ["-A", "FORWARD", "-i", t.rtr_public_if, "-o", t.rtr_private_if, "-j", "DROP"],  # INVALID
    ]
    try:
        in_ns(t.rtr, iptables, *rules[0])
    except NetnsError as nft:
        # Debian's iptables drives nf_tables; a kernel without it may still have the legacy
        # x_tables, which the same package reaches as iptables-legacy.
        legacy = tool("iptables-legacy")
        if legacy is None or legacy == iptables:
            raise
        try:
            in_ns(t.rtr, legacy, *rules[0])
        except NetnsError as old:
            raise NetnsError(f"{nft}; and with iptables-legacy: {old}") from None
        iptables = legacy
    for rule in rules[1:]:
        in_ns(t.rtr, iptables, *rule)

    in_ns(t.priv, ip, "link", "set", "lo", "up")
    in_ns(t.priv, ip, "addr", "add", f"{t.priv_ip}/24", "dev", t.priv_if)
    in_ns(t.priv, ip, "link", "set", t.priv_if, "up")
    in_ns(t.priv, ip, "route", "add", "default", "via", t.router_private_ip)


def _kill_inside(ip: str, ns: str) -> None:
    """SIGKILL whatever still runs in `ns` (only what was started in it), so that deleting
    the namespace frees it."""
    try:
        pids = run_checked([ip, "netns", "pids", ns]).split()
    except NetnsError:
        return  # the namespace was never made
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@contextmanager
def nat_topology() -> Iterator[NatTopology]:
    """Create pub, rtr and priv (see the module docstring), yield their names, and remove them
    on the way out, whatever happened."""
    ip = ip_command()
    iptables = tool("iptables")
    if iptables is None:
        raise NetnsError("the `iptables` command is not installed")
    suffix = unused_suffix(ip, lambda x: (f"pub-{x}", f"rtr-{x}", f"priv-{x}"))
    t = NatTopology(
        id=suffix,
        pub=f"pub-{suffix}",
        rtr=f"rtr-{suffix}",
        priv=f"priv-{suffix}",
        pub_if=f"p{suffix}",
        rtr_public_if=f"r{suffix}",
        rtr_private_if=f"rp{suffix}",
        priv_if=f"v{suffix}",
    )
    try:
        _build(t, ip, iptables)
        yield t
    finally:
        remove_namespaces(ip, t.namespaces)


def remove_namespaces(ip: str, namespaces: Iterable[str]) -> None:
    """Kill what runs in each of `namespaces` and delete it (those that exist); on the way out
    of a `finally`, so a failure to remove raises only when nothing else is raising."""
    problems = []
    try:
        existing = set(run_checked([ip, "netns", "list"]).split())
    except NetnsError as e:
        problems.append(str(e))
        existing = set(namespaces)
    for ns in namespaces:
        if ns not in existing:
            continue
        _kill_inside(ip, ns)
        try:
            run_checked([ip, "netns", "del", ns])
        except NetnsError as e:
            problems.append(str(e))
    if problems and sys.exc_info()[0] is None:
        raise NetnsError("; ".join(problems))


class Proc:
    """A process started in a namespace, what it prints collected line by line as it comes,
    so a test can wait for a line and show all of it when something fails."""

    def __init__(self, name: str, ns: str, argv: Sequence[str], **popen: Any) -> None:
        self.name = name
        self.popen: subprocess.Popen[str] = run_in(
            ns,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )
        self._changed = threading.Condition()
        self._out: list[str] = []
        self._err: list[str] = []
        self._open = 2
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        try:
            for line in stream:
                with self._changed:
                    into.append(line)
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # closed under us: the process is being reaped
        finally:
            with self._changed:
                self._open -= 1
                self._changed.notify_all()

    @property
    def stdout(self) -> str:
        with self._changed:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self._err)

    def describe(self) -> str:
        code = self.popen.poll()
        state = "running" if code is None else f"exit {code}"
        return (
            f"--- {self.name} ({state}) stdout:\n{self.stdout.rstrip()}\n"
            f"--- {self.name} stderr:\n{self.stderr.rstrip()}\n"
        )

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first stdout line matching `pattern` (searched, multiline), waiting at most
        `timeout` seconds; `WaitError` if it does not come or the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._out:
                    if found := regex.search(line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or self._open == 0:
                    break
                self._changed.wait(min(left, 0.5))
        why = "ended" if self.popen.poll() is not None else f"ran {timeout:g}s"
        raise WaitError(f"{self.name} {why} without printing /{pattern}/\n{self.describe()}")

    def wait(self, timeout: float) -> int:
        """Its exit code, once it ends; `WaitError` (it is left running) after `timeout`."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            message = f"{self.name} still runs after {timeout:g}s\n{self.describe()}"
            raise WaitError(message) from None
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """SIGKILL it (if it still runs), reap it and close its pipes."""
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass  # unkillable (stuck in the kernel): the namespace teardown tries again
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


_LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("port", s.getsockname()[1], flush=True)
while True:
    c, peer = s.accept()
    print("peer", peer[0], flush=True)
    c.close()
"""

_CONNECTOR = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as e:
    print(f"{type(e).__name__}: {e}", flush=True)
    sys.exit(1)
"""


@dataclass(slots=True)
class Listener:
    """A TCP listener in a namespace that accepts and notes each connection's source."""

    proc: Proc
    port: int

    def peers(self, want: int = 0, timeout: float = 0.0) -> list[str]:
        """The source addresses of the connections it took so far, waiting at most `timeout`
        seconds for there to be `want` of them."""
        deadline = time.monotonic() + timeout
        while True:
            seen = re.findall(r"^peer (\S+)$", self.proc.stdout, re.MULTILINE)
            if len(seen) >= want or time.monotonic() >= deadline:
                return seen
            time.sleep(0.05)


@contextmanager
def tcp_listener(ns: str, host: str, port: int = 0) -> Iterator[Listener]:
    """A TCP listener on host:port (port 0: any) inside `ns`, killed on the way out."""
    proc = Proc(f"listener in {ns}", ns, [sys.executable, "-c", _LISTENER, host, str(port)])
    try:
        bound = int(proc.wait_for(r"^port (\d+)$", timeout=COMMAND_TIMEOUT_S).group(1))
        yield Listener(proc, bound)
    finally:
        proc.kill()


def connect_from(ns: str, host: str, port: int, timeout: float = 2.0) -> str | None:
    """Open (and close) a TCP connection from inside `ns` to host:port: None when it was
    accepted, else why not (the connector's error: a timeout, refused, unreachable)."""
    try:
        out = check_in(
            ns,
            [sys.executable, "-c", _CONNECTOR, host, str(port), str(timeout)],
            timeout=timeout + COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"the connector itself did not end within {timeout + COMMAND_TIMEOUT_S:g}s"
    if out.returncode == 0:
        return None
    return (out.stdout.strip() or out.stderr.strip()) or f"exit {out.returncode}"
