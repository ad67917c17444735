"""What every group of commands shares on the command line: the options common to them all, the
HOST:PORT and port arguments, the data dir, and `UsageError`, which a command raises for a
mistake in how it was called (the app prints its message as one line and exits with status 2).
Every command that runs a DHT node takes `--trusted-net CIDR` (repeatable) and `--cap-lan`:
which peers the routing table spares from its per-/24 limits (default: loopback and LANs). Every
command that acts on a node takes `--id-bits N`: the work a node id must show on its network
(default: a gate's or worker's config file's `[dht] id_bits`, else `P2PSCHED_ID_BITS`, else
15; `identity.py`). Every command is added with `add_command`: a one-line summary, and
examples that work as written against `p2psched devnet up --dir .devnet`; `HelpFormatter`
shows each option's default.

Cheap to import: every parser is built from it, and `--help` must not wait for trio or the node.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from p2psched import logs
from p2psched.home import default_data_dir

if TYPE_CHECKING:
    from p2psched.dht.routing import TrustedNetworks

    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


class UsageError(Exception):
    """A mistake on the command line; the message says what and how to fix it."""


class HelpFormatter(argparse.HelpFormatter):
    """A description's lines wrapped one by one and an indented line (an example) kept as
    written; each option's default said after its help, unless the help already says it or
    there is none worth saying (no value, off, empty)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text  # (not in the generator: there super() has no class)
        return "\n".join(
            line if not line or line.startswith(" ") else fill(line, width, indent)
            for line in text.splitlines()
        )

    def _get_help_string(self, action: argparse.Action) -> str:
        said = action.help or ""
        default = action.default
        nothing = default is None or default is argparse.SUPPRESS or default is False
        if "default" in said or nothing or default in ("", []):
            return said
        shown = "%(default)g" if isinstance(default, float) else "%(default)s"
        return f"{said} (default: {shown})"


def add_command(
    sub: Subcommands,
    name: str,
    summary: str,
    examples: Sequence[str],
    *,
    parents: Sequence[argparse.ArgumentParser] = (),
    more: str = "",
    where: str = "",
) -> argparse.ArgumentParser:
    """Command `name`: `summary` is its line in its parent's list and the first of its own
    help, `more` what its help says next; its help ends with `examples`, command lines that
    work as written against `p2psched devnet up --dir .devnet`, and `where` says where a part
    of them comes from (the id of a job, ...)."""
    heading = ("examples" if len(examples) > 1 else "example") + (f" ({where})" if where else "")
    return sub.add_parser(
        name,
        parents=list(parents),
        help=summary,
        description=summary[0].upper() + summary[1:] + "." + (f"\n{more}" if more else ""),
        epilog=heading + ":" + "".join(f"\n  {example}" for example in examples),
        formatter_class=HelpFormatter,
    )


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    """HOST:PORT with HOST resolved to an IP address: peers answer from addresses, not names."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{what} {text!r} is not HOST:PORT (for example 127.0.0.1:4000)")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = str(socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0][4][0])
        except OSError as e:
            raise UsageError(f"{what} {text!r}: cannot resolve {host!r} ({e})") from None
    return host, int(port)


def port_number(text: str) -> int:
    """An argparse type: a TCP or UDP port, 0 for any free one."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def count(text: str) -> int:
    """An argparse type: a whole number above zero."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above zero")
    return int(text)


def positive(text: str) -> float:
    """An argparse type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above zero")
    return value


def data_dir(args: argparse.Namespace) -> Path:
    """The node's directory the command acts on: --data-dir, else the default one."""
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def hint(command: str, data_dir: Path | None) -> str:
    """`p2psched COMMAND` as a hint to print: with the `--data-dir` it needs unless that is
    the default one, so that it works when copied as printed."""
    if data_dir is None or data_dir.expanduser().resolve() == default_data_dir().resolve():
        return f"p2psched {command}"
    return f"p2psched {command} --data-dir {shlex.quote(str(data_dir))}"


def id_bits(text: str) -> int:
    """An argparse type: a network's id_bits."""
    if not text.isdigit() or int(text) > 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bits (0..32)")
    return int(text)


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every command that acts on a node: its data dir and its logs."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        help="this node's directory: its identity key and state (default: $P2PSCHED_HOME, "
        "else ~/.p2psched)",
    )
    common.add_argument(
        "--id-bits",
        type=id_bits,
        metavar="N",
        help="the work a node id must show on this network, the same for all its nodes: "
        "SHA-256 of the id starts with N zero bits (0..32; default: the --config file's [dht] "
        "id_bits, else $P2PSCHED_ID_BITS, else 15)",
    )
    common.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="warning",
        help="log events (to stderr) at this level and above",
    )
    common.add_argument(
        "--log-json",
        action="store_true",
        help="log events as JSON lines (ts, level, logger, event, node, job, task, error)",
    )
    return common


def trust_options(sp: argparse.ArgumentParser) -> None:
    """Which peers the DHT's routing table spares from its per-/24 limits (README: A lab on
    one subnet), for a command that runs a DHT node."""
    sp.add_argument(
        "--trusted-net",
        action="append",
        default=[],
        metavar="CIDR",
        help="spare DHT peers in this network from the per-/24 limits, as LAN peers are; "
        "repeatable; for example 100.64.0.0/10 for a Tailscale tailnet (README: A lab on one "
        "subnet)",
    )
    sp.add_argument(
        "--cap-lan",
        action="store_true",
        help="hold DHT peers on a LAN (10/8, 172.16/12, 192.168/16, link-local, fc00::/7) to "
        "the per-/24 limits as internet ones are: for a LAN shared with strangers",
    )


def trusted_networks(args: argparse.Namespace) -> TrustedNetworks:
    """The `TrustedNetworks` that `trust_options` asked for."""
    from p2psched.dht.routing import TrustedNetworks

    try:
        return TrustedNetworks.parse(args.trusted_net, lan=not args.cap_lan)
    except ValueError as e:
        raise UsageError(f"--trusted-net: {e}") from None


def api_options(sp: argparse.ArgumentParser) -> None:
    """Where a node the command runs serves its control API, and its --config file (README:
    A node's config file), whose [server] table these flags win over."""
    sp.add_argument(
        "--config",
        metavar="FILE",
        help="the node's TOML config: [server], [database], [models.NAME], [reputation], and "
        "its role's tables (README: A node's config file)",
    )
    sp.add_argument(
        "--api-port",
        type=port_number,
        help="control API port (default: [server] port, else 0, any free one)",
    )
    sp.add_argument(
        "--api-host", help="control API address (default: [server] host, else 127.0.0.1)"
    )
    sp.add_argument(
        "--api-remote",
        action="store_true",
        help="allow --api-host to be other than loopback, over TLS (--api-tls-cert and "
        "--api-tls-key); requests still need the token",
    )
    sp.add_argument(
        "--api-tls-cert",
        metavar="PEM",
        help="the control API's TLS certificate (its chain after it)",
    )
    sp.add_argument("--api-tls-key", metavar="PEM", help="the private key of --api-tls-cert")
    sp.add_argument(
        "--api-sessions",
        type=count,
        metavar="N",
        help="signed TCP sessions the API holds at once, the least recently used dropped "
        "(default: [server] sessions, else 1024)",
    )
    sp.add_argument(
        "--api-session-idle",
        type=positive,
        metavar="S",
        help="seconds a signed TCP session lives unused (default: [server] session_idle_s, "
        "else 60)",
    )
