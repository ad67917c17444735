"""`p2psched dht serve|put|get` and `p2psched demo`: a bare DHT node, the records it stores, and
a swarm in one process showing what the DHT does; and joining the DHT, which other commands
share.

Promises: a key on the command line is any text (the DHT key is its SHA-256); a node that cannot
join through the given addresses stops with one line naming them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from typing import TYPE_CHECKING

from p2psched.cli.args import (
    UsageError,
    add_command,
    data_dir,
    parse_hostport,
    trust_options,
    trusted_networks,
)

if TYPE_CHECKING:
    from p2psched.cli.args import Subcommands
    from p2psched.dht.node import DhtNode

GATE_SILENT = "the gate at {} did not answer; check the address and that it runs"


def key_of(text: str) -> bytes:
    """DHT keys are 32 bytes; on the command line a key is any text, hashed with SHA-256."""
    return hashlib.sha256(text.encode()).digest()


def near(peer: tuple[str, int]) -> str:
    """The address of this machine to bind where it can reach `peer`."""
    from p2psched.node.node import bind_host_toward

    return bind_host_toward(peer[0])


async def join(node: DhtNode, seeds: list[tuple[str, int]], failure: str) -> None:
    """Join the DHT through `seeds`, or stop with `failure` when none of them answers."""
    if await node.bootstrap(seeds) == 0:
        raise UsageError(failure)


async def _join_bootstrap(args: argparse.Namespace, node: DhtNode) -> None:
    if args.bootstrap:
        seeds = [parse_hostport(b, "--bootstrap") for b in args.bootstrap]
        await join(
            node,
            seeds,
            f"no bootstrap node answered at {', '.join(args.bootstrap)}; "
            "check the addresses and that those nodes are running",
        )


def _bind_for(args: argparse.Namespace) -> str:
    """Bind a short-lived client where it can reach its (first) bootstrap node."""
    return near(parse_hostport(args.bootstrap[0], "--bootstrap"))


def cmd_dht_serve(args: argparse.Namespace) -> None:
    import trio

    from p2psched.dht.node import open_dht_node
    from p2psched.dht.protocol import DhtConfig
    from p2psched.home import running_in
    from p2psched.identity import load_or_create_identity
    from p2psched.scheduler.ads import check_ad_record

    host, port = parse_hostport(args.listen, "--listen")

    async def main() -> None:
        config = DhtConfig(client=args.client, trusted=trusted_networks(args))
        async with open_dht_node(
            identity, host=host, port=port, config=config, validate=check_ad_record
        ) as node:
            await _join_bootstrap(args, node)
            mode = "client" if args.client else "server"
            print(
                f"dht node {node.node_id.hex()} listening on "
                f"{node.address[0]}:{node.address[1]} ({mode})"
            )
            print(
                f"routing table: {len(node.protocol.routing)} contacts; Ctrl-C to stop", flush=True
            )
            await trio.sleep_forever()

    # Held as any node holds its data dir: two nodes with one id would each be the other.
    identity = load_or_create_identity(data_dir(args))  # (first: a new dir is then empty)
    with running_in(data_dir(args), "a DHT node"):
        trio.run(main)


def cmd_dht_put(args: argparse.Namespace) -> None:
    import trio

    from p2psched.dht.node import open_dht_node
    from p2psched.dht.protocol import DhtConfig
    from p2psched.dht.records import MAX_VALUE_BYTES
    from p2psched.identity import load_or_create_identity

    value = args.value.encode()
    if len(value) > MAX_VALUE_BYTES:
        raise UsageError(
            f"the value is {len(value)} bytes; a record holds at most {MAX_VALUE_BYTES}"
        )
    max_ttl = DhtConfig().store.max_ttl
    if not 0 < args.ttl <= max_ttl:
        raise UsageError(f"--ttl {args.ttl:g}: choose between 1 and {max_ttl:.0f} seconds")
    identity = load_or_create_identity(data_dir(args))

    async def main() -> None:
        config = DhtConfig(client=True, trusted=trusted_networks(args))
        async with open_dht_node(identity, host=_bind_for(args), config=config) as node:
            await _join_bootstrap(args, node)
            stored = await node.put(key_of(args.key), value, ttl=args.ttl)
            print(
                f"stored {args.key!r} on {stored} nodes "
                f"(expires in {args.ttl:.0f}s unless republished)"
            )

    trio.run(main)


def cmd_dht_get(args: argparse.Namespace) -> None:
    import trio

    from p2psched.dht.node import open_dht_node
    from p2psched.dht.protocol import DhtConfig
    from p2psched.identity import identity_for_a_look

    identity = identity_for_a_look(data_dir(args))

    async def main() -> None:
        config = DhtConfig(client=True, trusted=trusted_networks(args))
        async with open_dht_node(identity, host=_bind_for(args), config=config) as node:
            await _join_bootstrap(args, node)
            records = await node.get(key_of(args.key))
            if not records:
                print(f"no records under {args.key!r}")
            for r in records:
                left = r.expires_ms / 1000 - node.now()
                print(
                    f"{r.publisher_id.hex()[:16]}  seq={r.seq}  expires_in={left:.0f}s  "
                    f"{r.value.decode(errors='replace')}"
                )

    trio.run(main)


def cmd_demo(args: argparse.Namespace) -> None:
    import statistics

    import trio

    from p2psched.dht.routing import as_int
    from p2psched.dht.swarm import open_swarm

    n = args.nodes
    if not 2 <= n <= 2000:
        raise UsageError(f"--nodes {n}: choose between 2 and 2000")

    async def main() -> None:
        print(
            f"starting {n} DHT nodes on 127.0.0.1, each with its own Ed25519 identity and UDP port"
        )
        t0 = time.perf_counter()
        async with open_swarm(n) as swarm:
            nodes = [m.node for m in swarm]
            sizes = [len(x.protocol.routing) for x in nodes]
            print(
                f"  joined through {nodes[0].address[0]}:{nodes[0].address[1]} "
                f"in {time.perf_counter() - t0:.2f}s; routing tables hold "
                f"{min(sizes)}..{max(sizes)} contacts (median {statistics.median(sizes):.0f})"
            )
            key = key_of("demo/greeting")
            stored = await nodes[1].put(key, b"hello from node 1", ttl=600)
            print(f"  node 1 stored a signed record under 'demo/greeting' on {stored} nodes")
            found = 0
            for x in nodes:
                records = await x.get(key)
                found += any(r.value == b"hello from node 1" for r in records)
            print(f"  {found} of {n} nodes found it")
            ids = [x.node_id for x in nodes]
            target = os.urandom(32)
            lookup = await nodes[-1].find_node(target)
            truth = sorted(ids[:-1], key=lambda i: as_int(i) ^ as_int(target))[
                : len(lookup.closest())
            ]
            got = {c.node_id for c in lookup.closest()}
            print(
                f"  a lookup for a random id found {len(got & set(truth))} of the true "
                f"{len(truth)} closest nodes in {lookup.hops} hops, {lookup.queries_sent} queries"
            )
            victims = swarm[1 : 1 + n // 5]
            for m in victims:
                m.kill()
            alive = [m.node for m in swarm if m.alive]
            ok = 0
            for x in alive:
                records = await x.get(key)
                ok += any(r.value == b"hello from node 1" for r in records)
            print(
                f"  killed {len(victims)} nodes (the publisher too): "
                f"{ok} of {len(alive)} survivors still find the record"
            )
            dropped = sum(v for x in nodes for k, v in x.stats.items() if k.startswith("dropped_"))
            print(f"  datagrams dropped as unauthenticated, malformed or replayed: {dropped}")
        print("done")

    trio.run(main)


# The examples' own DHT node, on a port other than the gate examples' (cli/roles.py).
DHT_EXAMPLE = "p2psched dht serve --listen 127.0.0.1:4100 --data-dir .devnet/my-dht"


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    dht = add_command(
        sub,
        "dht",
        "run a bare DHT node, or store and read its signed records: serve, put, get",
        [DHT_EXAMPLE, "p2psched dht get greeting --bootstrap 127.0.0.1:4100"],
        more="(README: The DHT)",
    ).add_subparsers(dest="dht_command", required=True)
    sp = add_command(
        dht,
        "serve",
        "run a DHT node until Ctrl-C",
        [DHT_EXAMPLE],
        parents=[common],
        more="(README: The DHT)",
    )
    sp.add_argument("--listen", default="0.0.0.0:4000", help="HOST:PORT to bind")
    sp.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a node to join through (repeatable)",
    )
    sp.add_argument(
        "--client",
        action="store_true",
        help="not reachable from outside: query and store, but stay out of routing tables",
    )
    trust_options(sp)
    sp.set_defaults(func=cmd_dht_serve)
    for name, func, summary, example in (
        (
            "put",
            cmd_dht_put,
            "store a signed record",
            "p2psched dht put greeting hello --bootstrap 127.0.0.1:4100 "
            "--data-dir .devnet/my-client",
        ),
        (
            "get",
            cmd_dht_get,
            "print the records under a key",
            "p2psched dht get greeting --bootstrap 127.0.0.1:4100",
        ),
    ):
        sp = add_command(
            dht,
            name,
            summary,
            [DHT_EXAMPLE, example],
            parents=[common],
            where="a DHT node, and a short-lived client that joins through it",
        )
        sp.add_argument("key", help="any text; the DHT key is its SHA-256")
        if name == "put":
            sp.add_argument("value", help="the record's value (text, at most 4096 bytes)")
            sp.add_argument(
                "--ttl", type=float, default=3600.0, help="seconds until the record expires"
            )
        sp.add_argument(
            "--bootstrap",
            action="append",
            required=True,
            metavar="HOST:PORT",
            help="a node to join through (repeatable)",
        )
        trust_options(sp)
        sp.set_defaults(func=func)

    sp = add_command(
        sub,
        "demo",
        "run a local swarm of DHT nodes in this process and show what it does",
        ["p2psched demo --nodes 20"],
        more="(README: The DHT)",
    )
    sp.add_argument("--nodes", type=int, default=50, help="how many nodes")
    sp.set_defaults(func=cmd_demo)
