"""The commands that run a node in one of its roles, until SIGTERM or Ctrl-C: `gate`, `node`,
`worker join`; and those that set a node up or steer its role: `init`, `id`, `gate status`,
`worker drain|undrain`.

Promises: every argument is checked (addresses, the gate's limits file, the worker's config,
where the control API may listen) before the node starts; the control API stays on loopback
unless the operator asks twice.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from p2psched.api.endpoint import TOKEN_FILE
from p2psched.cli.args import (
    UsageError,
    add_command,
    api_options,
    data_dir,
    hint,
    parse_hostport,
    trust_options,
    trusted_networks,
)
from p2psched.cli.dht import near
from p2psched.cli.show import client, view
from p2psched.home import default_data_dir
from p2psched.wire.address import host_port

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    from p2psched.api.endpoint import ApiTls
    from p2psched.cli.args import Subcommands
    from p2psched.cli.local_node import ApiListen
    from p2psched.dht.config_file import DhtSettings
    from p2psched.identity import Identity
    from p2psched.node.config import NodeConfig, ServerTable
    from p2psched.node.node import Node

    OpenNode = Callable[[Identity, Path], AbstractAsyncContextManager[Node]]
    ServeNode = Callable[[Node], Awaitable[None]]


def cmd_init(args: argparse.Namespace) -> None:
    from p2psched.identity import create_identity

    identity = create_identity(data_dir(args))
    print(f"created identity {identity.node_id.hex()} in {data_dir(args)}")


def cmd_id(args: argparse.Namespace) -> None:
    from p2psched.identity import load_identity

    print(load_identity(data_dir(args)).node_id.hex())


def _node_config(args: argparse.Namespace, role: str) -> NodeConfig:
    """The --config file for a node in `role` (the defaults without one), its [dht] id_bits
    taken as this network's unless --id-bits gave one."""
    from p2psched.node.config import load_node_config

    config = load_node_config(Path(args.config) if args.config else None, role)
    _use_id_bits(args, config.dht)
    return config


def _api_bind(args: argparse.Namespace, server: ServerTable) -> ApiListen:
    """Where the control API listens (the flags, else the config's [server], else loopback
    and any free port): loopback unless the operator says otherwise, twice, and then over TLS
    only."""
    host = args.api_host or server.host or "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        raise UsageError(f"--api-host {host!r} is not an IP address") from None
    if not loopback and not args.api_remote:
        said = "--api-host" if args.api_host else f"--config {args.config}: [server] host ="
        raise UsageError(
            f"{said} {host} would open the control API beyond this machine; add "
            "--api-remote if that is meant (every request still needs the token in "
            f"{data_dir(args) / TOKEN_FILE})"
        )
    tls = _api_tls(args)
    if not loopback and tls is None:
        raise UsageError(
            "--api-remote serves TLS: pass --api-tls-cert and --api-tls-key, or keep the API "
            "on loopback and reach it through SSH (ssh -L PORT:127.0.0.1:PORT THIS-HOST)"
        )
    from p2psched.api.sessions import SessionLimits

    defaults = SessionLimits()
    sessions = SessionLimits(
        most=args.api_sessions or server.sessions or defaults.most,
        idle_s=args.api_session_idle or server.session_idle_s or defaults.idle_s,
    )
    port = args.api_port if args.api_port is not None else server.port or 0
    return host.strip("[]"), port, tls, sessions, server


def _api_tls(args: argparse.Namespace) -> ApiTls | None:
    """The certificate and key of --api-tls-cert/--api-tls-key, checked to load together."""
    import ssl

    from p2psched.api.endpoint import ApiTls

    if args.api_tls_cert is None and args.api_tls_key is None:
        return None
    if args.api_tls_cert is None or args.api_tls_key is None:
        raise UsageError("--api-tls-cert and --api-tls-key go together")
    tls = ApiTls(Path(args.api_tls_cert), Path(args.api_tls_key))
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(
            f"--api-tls-cert {tls.cert} with --api-tls-key {tls.key}: {e.strerror or e} "
            "(a PEM certificate and the PEM private key it was made for)"
        ) from None
    return tls


def _route_host(bound_host: str, toward: tuple[str, int]) -> str:
    """The host others can reach this node at: the bound one, or, for a wildcard bind, this
    machine's address on the route to `toward` (no packet is sent to find it)."""
    if bound_host not in ("0.0.0.0", "::"):
        return bound_host
    family = socket.AF_INET6 if ":" in toward[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(toward)
        return str(probe.getsockname()[0])


def _run(args: argparse.Namespace, opened: OpenNode, serve: ServeNode) -> None:
    """Run this machine's node until SIGTERM or Ctrl-C: `opened` opens it in its roles (it is
    `open_node` with the role's keywords), `serve` serves its control API and says where."""
    import trio

    from p2psched.identity import load_or_create_identity

    folder = data_dir(args)
    identity = load_or_create_identity(folder)

    async def main() -> None:
        async with opened(identity, folder) as node:
            await serve(node)

    trio.run(main)


def cmd_gate(args: argparse.Namespace) -> None:
    if args.action == "status":
        _gate_status(args)
        return
    from p2psched.cli.local_node import serve_node
    from p2psched.node.node import open_node

    config = _node_config(args, "gate")
    api = _api_bind(args, config.server)
    host, port = parse_hostport(args.listen, "--listen")
    seeds = [parse_hostport(other, "--bootstrap") for other in args.bootstrap]
    headline = (
        "gate {id} listening on {dht} (DHT on UDP, relay on TCP); Ctrl-C to stop\n"
        f"  workers join with: {_join_command(host, data_dir(args))}\n"
        f"  its relay: {_braced(hint('gate status', data_dir(args)))}"
    )
    opened = partial(
        open_node,
        host=host,
        port=port,
        seeds=seeds,
        gate=True,
        resume=True,
        relay_limits=config.relay,
        dht_settings=config.dht,
        trusted=trusted_networks(args),
        store_path=config.database,
        models=config.models,
        max_price=config.server.max_price,
        reputation=config.reputation,
    )
    _run(args, opened, lambda node: serve_node(node, headline, api))


# Where a wildcard-bound gate asks its route to, to learn its own address (documentation
# ranges, RFC 5737 and 3849: a UDP socket's connect sends nothing).
_PROBES = {"0.0.0.0": ("192.0.2.1", 9), "::": ("2001:db8::1", 9)}


def _join_command(bound_host: str, gate_dir: Path) -> str:
    """`p2psched worker join --gate ADDRESS:{port}` (a format string: the port is filled in
    once bound) that works as printed: at the address workers reach this gate at, with a note
    where that is a guess; with a data dir other than the gate's when the gate has the default
    one (a worker on this machine cannot share it, and one elsewhere loses nothing by it)."""
    host, note = bound_host, ""
    if bound_host in _PROBES:
        try:
            host = _route_host(bound_host, _PROBES[bound_host])
            note = (
                f" ({host}: this machine's address on its default route; if workers reach "
                "it at another, give them that)"
            )
        except OSError:  # no route out: only its user knows the address
            host, note = "HOST", " (HOST: this machine's address, as workers reach it)"
    elif ipaddress.ip_address(bound_host).is_loopback:
        note = " (on this machine only: the gate listens on loopback)"
    default = default_data_dir()
    own = default.with_name(default.name + "-worker")
    shared = gate_dir.expanduser().resolve() == default.resolve()
    command = _braced(hint("worker join", own if shared else None))
    address = host_port(host, 0).rpartition(":")[0]  # (an IPv6 host in its brackets)
    return f"{command} --gate {address}:{{port}}{_braced(note)}"


def _braced(text: str) -> str:
    """`text` kept as it is through the headline's `str.format` (a path may hold braces)."""
    return text.replace("{", "{{").replace("}", "}}")


def _use_id_bits(args: argparse.Namespace, dht: DhtSettings) -> None:
    """The config file's [dht] id_bits as this network's, unless --id-bits gave one (it wins
    over the file, which wins over $P2PSCHED_ID_BITS); before the identity is made or loaded."""
    from p2psched.identity import use_network_id_bits

    if args.id_bits is None and dht.id_bits is not None:
        use_network_id_bits(dht.id_bits)


def _gate_status(args: argparse.Namespace) -> None:
    status = view(args, "/v1/gate")
    if status is None:
        return
    counters = status["counters"]
    print(f"relay on {status['relay']} (TCP)")
    print(f"reservations: {len(status['reservations'])}")
    for r in status["reservations"]:
        print(
            f"  {r['peer']}  from {r['ip']}, for {r['since']:g}s, expires in {r['expires_in']:g}s"
        )
    print(f"circuits: {len(status['circuits'])}")
    for c in status["circuits"]:
        state = "up" if c["up"] else "waiting for the worker"
        print(
            f"  #{c['id']} {c['from'][:16]}… → {c['to'][:16]}…  {state}, "
            f"{c['open_for']:g}s, {c['bytes']} bytes"
        )
    names = sorted(counters)
    print("counters: " + (", ".join(f"{k}={counters[k]}" for k in names) or "none yet"))


def cmd_node(args: argparse.Namespace) -> None:
    from p2psched.cli.local_node import serve_node
    from p2psched.node.node import open_node

    config = _node_config(args, "node")
    api = _api_bind(args, config.server)
    gates = [parse_hostport(g, "--gate") for g in args.gate]
    host, port = parse_hostport(args.listen, "--listen") if args.listen else (near(gates[0]), 0)
    headline = (
        "node {id} joined through " + ", ".join(args.gate) + "; DHT on {dht}\n"
        f"  submit jobs to it with: {_braced(hint('submit JOB.yaml', data_dir(args)))}; "
        "Ctrl-C to stop"
    )
    opened = partial(
        open_node,
        host=host,
        port=port,
        seeds=gates,
        dht_client=args.client,
        resume=True,
        trusted=trusted_networks(args),
        dht_settings=config.dht,
        store_path=config.database,
        models=config.models,
        max_price=config.server.max_price,
        reputation=config.reputation,
    )
    _run(args, opened, lambda node: serve_node(node, headline, api))


def cmd_worker_join(args: argparse.Namespace) -> None:
    from p2psched.cli.local_node import serve_worker
    from p2psched.node.node import open_node

    node_config = _node_config(args, "worker")
    config = node_config.worker
    assert config is not None  # (a worker's node config has one)
    api = _api_bind(args, node_config.server)
    gates = [parse_hostport(g, "--gate") for g in args.gate]
    from p2psched.worker.coverage import warn_of_gaps

    warn_of_gaps(config)  # what it would advertise and fail: said before it joins
    if "command" in config.drivers and config.command_driver.sandbox != "none":
        from p2psched.worker.sandbox import check

        check(config.command_driver)  # before joining: a worker that cannot sandbox never joins
    host, port = parse_hostport(args.listen, "--listen") if args.listen else (near(gates[0]), 0)
    from p2psched.resources.need import MAX_AD_LIFETIME as max_ttl  # holders grant no more

    if not 2 <= args.ad_ttl <= max_ttl:
        raise UsageError(f"--ad-ttl {args.ad_ttl:g}: choose between 2 and {max_ttl:.0f} seconds")
    opened = partial(
        open_node,
        host=host,
        port=port,
        seeds=gates,
        worker=config,
        advertise_host=_route_host(host, gates[0]),
        ad_ttl=args.ad_ttl,
        resume=True,
        reachability=args.reachability,
        dht_settings=config.dht,
        trusted=trusted_networks(args),
        store_path=node_config.database,
        models=node_config.models,
        max_price=node_config.server.max_price,
        reputation=node_config.reputation,
    )
    _run(args, opened, lambda node: serve_worker(args, node, config, api))


def cmd_worker_drain(args: argparse.Namespace) -> None:
    action = "drain" if args.worker_command == "drain" else "undrain"
    with client(args) as node:
        answer = node.post(f"/v1/worker/{action}", {})
    if answer["draining"]:
        print(f"draining: takes no new tasks; {answer['held']} still held here")
    else:
        print("taking tasks again")


# The examples' own gate, on a port other than the DHT examples' (cli/dht.py).
GATE_EXAMPLE = "p2psched gate --listen 127.0.0.1:4000 --data-dir .devnet/my-gate"


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    sp = add_command(
        sub,
        "init",
        "create this node's identity (an Ed25519 key) in its data dir",
        ["p2psched init --data-dir .devnet/my-node"],
        parents=[common],
    )
    sp.set_defaults(func=cmd_init)
    sp = add_command(
        sub,
        "id",
        "print this node's id",
        ["p2psched id --data-dir .devnet/gate"],
        parents=[common],
        more="(README: Identity)",
    )
    sp.set_defaults(func=cmd_id)
    _register_gate(sub, common)

    sp = add_command(
        sub,
        "node",
        "run a node that schedules jobs, until Ctrl-C",
        [GATE_EXAMPLE, "p2psched node --gate 127.0.0.1:4000 --data-dir .devnet/my-node"],
        parents=[common],
        more="Submit jobs to it with its --data-dir. (README: Running jobs)",
        where="a gate, and a node that joins through it",
    )
    sp.add_argument(
        "--gate",
        required=True,
        action="append",
        metavar="HOST:PORT",
        help="a gate to join through (repeatable)",
    )
    sp.add_argument("--listen", metavar="HOST:PORT", help="where to bind (default: any free port)")
    sp.add_argument("--client", action="store_true", help="DHT client mode (behind NAT)")
    trust_options(sp)
    api_options(sp)
    sp.set_defaults(func=cmd_node)
    _register_worker(sub, common)


def _register_gate(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    sp = add_command(
        sub,
        "gate",
        "run a gate, the node newcomers join through, until Ctrl-C; or show its relay (status)",
        [GATE_EXAMPLE, "p2psched gate status --data-dir .devnet/gate"],
        parents=[common],
        more="(README: Running a gate)",
    )
    sp.add_argument("--listen", default="0.0.0.0:4000", help="HOST:PORT to bind")
    sp.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another gate to join (repeatable)",
    )
    trust_options(sp)
    api_options(sp)
    sp.add_argument(
        "action",
        nargs="?",
        choices=["status"],
        help="status: the relay of the gate running on --data-dir",
    )
    sp.add_argument("--json", action="store_true", help="with status: print it as JSON")
    sp.set_defaults(func=cmd_gate)


def _register_worker(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    worker = add_command(
        sub,
        "worker",
        "offer this machine's resources: join a network, drain, undrain",
        [
            GATE_EXAMPLE,
            "p2psched worker join --gate 127.0.0.1:4000 --data-dir .devnet/my-worker",
            "p2psched worker drain --data-dir .devnet/worker-0",
        ],
        more="(README: Running a worker)",
    ).add_subparsers(dest="worker_command", required=True)
    sp = add_command(
        worker,
        "join",
        "join a network through a gate and advertise this machine, until Ctrl-C",
        [GATE_EXAMPLE, "p2psched worker join --gate 127.0.0.1:4000 --data-dir .devnet/my-worker"],
        parents=[common],
        more="(README: Running a worker)",
        where="a gate, and a worker that joins through it",
    )
    sp.add_argument(
        "--gate",
        required=True,
        action="append",
        metavar="HOST:PORT",
        help="a gate to join through, and to relay for it if it cannot be reached (repeatable: "
        "it moves to the next when one goes away)",
    )
    sp.add_argument(
        "--reachability",
        choices=["auto", "public", "private"],
        default="auto",
        help="auto (default): ask a gate to dial it back; private: behind NAT, take tasks "
        "through a gate's relay; public: schedulers can dial it",
    )
    sp.add_argument("--listen", metavar="HOST:PORT", help="where to bind (default: any free port)")
    sp.add_argument(
        "--ad-ttl", type=float, default=120.0, help="seconds the ad lives unless renewed"
    )
    trust_options(sp)
    api_options(sp)
    sp.set_defaults(func=cmd_worker_join)
    for name, summary in (
        ("drain", "take no new tasks and finish those held (the worker running on --data-dir)"),
        ("undrain", "take tasks again (the worker running on --data-dir)"),
    ):
        sp = add_command(
            worker,
            name,
            summary,
            [f"p2psched worker {name} --data-dir .devnet/worker-0"],
            parents=[common],
        )
        sp.set_defaults(func=cmd_worker_drain)
