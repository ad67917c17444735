"""DHT benchmark: p2psched's DHT against the `kademlia` package, same machine, same run.

Each implementation runs in its own child process (so memory figures do not mix): N nodes on
127.0.0.1 joined through the first one, then `--ops` stores from random nodes and `--ops` gets of
those keys from other random nodes, one at a time. p2psched authenticates every datagram (the
reference does not) and also reports lookup hops, recall of FIND_NODE against the ground truth
computed from all ids, and memory per node.

It then measures what a request costs the node that serves it: one node in a process of its own,
`--clients` nodes in this process that each first contact it (so that the burst is of warm,
authenticated requests: a MAC each way, as between nodes that know each other), then a burst of
`--requests` FIND_NODEs from each, all at once; the serving process's CPU time
(`time.process_time`) over the burst gives the requests it serves per CPU second, against one
kademlia node serving kademlia clients the same way.

    python bench/dht.py [--nodes 200] [--ops 200] [--clients 50] [--requests 40]

Ends with:
dht N=<n> store_p50_ratio=<p2psched/kademlia> get_p50_ratio=<p2psched/kademlia> recall=<r>
    served_per_cpu_s=<p2psched>/<kademlia>
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

# Ids at test difficulty (here and in the processes this starts): what is measured is the DHT,
# not the second of work each identity of a real network costs.
os.environ.setdefault("P2PSCHED_ID_BITS", "4")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# -- kademlia (asyncio) --------------------------------------------------------------------------


def run_kademlia(n: int, ops: int, seed: int) -> dict[str, Any]:
    import asyncio
    import logging

    from kademlia.network import Server

    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    rng = random.Random(seed)

    async def main() -> dict[str, Any]:
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        servers = []
        for _ in range(n):
            s = Server()
            await s.listen(0, interface="127.0.0.1")
            servers.append(s)
        seed_addr = ("127.0.0.1", servers[0].transport.get_extra_info("sockname")[1])
        sem = asyncio.Semaphore(16)

        async def join(s: Server) -> None:
            async with sem:
                await s.bootstrap([seed_addr])

        await asyncio.gather(*(join(s) for s in servers[1:]))
        setup = time.perf_counter() - t0
        mem = (rss_bytes() - rss0) / n
        keys = [f"key-{i}-{rng.random()}" for i in range(ops)]
        store, get, found = [], [], 0
        for key in keys:
            s = rng.choice(servers)
            t = time.perf_counter()
            await s.set(key, b"v" * 64)
            store.append(time.perf_counter() - t)
        for key in keys:
            s = rng.choice(servers)
            t = time.perf_counter()
            value = await s.get(key)
            get.append(time.perf_counter() - t)
            found += value == b"v" * 64
        for s in servers:
            s.stop()
        return {"setup": setup, "store": store, "get": get, "found": found, "mem": mem}

    return asyncio.run(main())


# -- p2psched (trio) -----------------------------------------------------------------------------


def run_p2psched(n: int, ops: int, seed: int) -> dict[str, Any]:
    import trio

    from p2psched.dht.routing import as_int
    from p2psched.dht.swarm import open_swarm

    rng = random.Random(seed)

    async def main() -> dict[str, Any]:
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        async with open_swarm(n) as swarm:
            setup = time.perf_counter() - t0
            mem = (rss_bytes() - rss0) / n
            nodes = [m.node for m in swarm]
            keys = [rng.randbytes(32) for _ in range(ops)]
            store, get, found = [], [], 0
            for key in keys:
                node = rng.choice(nodes)
                t = time.perf_counter()
                await node.put(key, b"v" * 64)
                store.append(time.perf_counter() - t)
            for key in keys:
                node = rng.choice(nodes)
                t = time.perf_counter()
                records = await node.get(key)
                get.append(time.perf_counter() - t)
                found += len(records) == 1 and records[0].value == b"v" * 64
            ids = [x.node_id for x in nodes]
            recalls, hops = [], []
            for _ in range(ops):
                node = rng.choice(nodes)
                target = rng.randbytes(32)
                lookup = await node.find_node(target)
                t = as_int(target)
                truth = sorted((i for i in ids if i != node.node_id), key=lambda i: as_int(i) ^ t)
                got = {c.node_id for c in lookup.closest()}
                recalls.append(len(got & set(truth[:20])) / 20)
                hops.append(lookup.hops)
            dropped = sum(v for x in nodes for k, v in x.stats.items() if k.startswith("dropped"))
        return {
            "setup": setup,
            "store": store,
            "get": get,
            "found": found,
            "mem": mem,
            "recall": statistics.fmean(recalls),
            "hops": statistics.fmean(hops),
            "dropped": dropped,
        }

    return trio.run(main)


# -- what serving a request costs: one serving process, clients here ----------------------------


def serve(impl: str) -> None:
    """Serve on 127.0.0.1 until stdin closes; print the address (and node id), then this
    process's CPU seconds each time a line comes in on stdin."""
    import trio

    def report(x: dict[str, Any]) -> None:
        print(json.dumps(x), flush=True)

    if impl == "kademlia":
        import asyncio

        from kademlia.network import Server

        async def kademlia_main() -> None:
            server = Server()
            await server.listen(0, interface="127.0.0.1")
            port = server.transport.get_extra_info("sockname")[1]
            report({"port": port, "id": server.node.id.hex()})
            loop = asyncio.get_running_loop()
            while await loop.run_in_executor(None, sys.stdin.readline):
                report({"cpu": time.process_time()})
            server.stop()

        asyncio.run(kademlia_main())
        return

    from p2psched.dht.node import open_dht_node
    from p2psched.identity import Identity

    async def p2psched_main() -> None:
        async with open_dht_node(Identity.generate(), host="127.0.0.1") as node:
            report({"port": node.address[1], "id": node.node_id.hex()})
            lines = trio.wrap_file(sys.stdin)
            while await lines.readline():
                report({"cpu": time.process_time()})

    trio.run(p2psched_main)


def serving_cost(impl: str, clients: int, requests: int) -> dict[str, float]:
    """Requests the serving process answered in the burst, and the CPU seconds it spent."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", impl],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    hello = json.loads(proc.stdout.readline())

    def cpu() -> float:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("mark\n")
        proc.stdin.flush()
        return float(json.loads(proc.stdout.readline())["cpu"])

    burst = burst_kademlia if impl == "kademlia" else burst_p2psched
    try:
        answered, used = burst(hello["port"], bytes.fromhex(hello["id"]), clients, requests, cpu)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    return {"answered": answered, "cpu": used}


def burst_p2psched(
    port: int, node_id: bytes, clients: int, requests: int, cpu: Any
) -> tuple[int, float]:
    import contextlib

    import trio

    from p2psched.dht import messages as m
    from p2psched.dht.node import open_dht_node
    from p2psched.identity import Identity

    async def main() -> tuple[int, float]:
        answered = 0
        async with contextlib.AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    open_dht_node(Identity.generate(), host="127.0.0.1")
                )
                for _ in range(clients)
            ]
            server = [await node.ping(("127.0.0.1", port)) for node in nodes]
            for node, contact in zip(nodes, server):  # warm: the cookie is handed back
                assert contact is not None and contact.node_id == node_id
                await node.call(contact, m.Ping())

            async def ask(node: Any, contact: Any) -> None:
                nonlocal answered
                for _ in range(requests):
                    got = await node.call(contact, m.FindNode(os.urandom(32)))
                    answered += got is not None and isinstance(got[1], m.Nodes)

            before = cpu()
            async with trio.open_nursery() as nursery:
                for node, contact in zip(nodes, server):
                    nursery.start_soon(ask, node, contact)
            return answered, cpu() - before

    return trio.run(main)


def burst_kademlia(
    port: int, node_id: bytes, clients: int, requests: int, cpu: Any
) -> tuple[int, float]:
    import asyncio
    import logging

    from kademlia.network import Server
    from kademlia.node import Node

    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)

    async def main() -> tuple[int, float]:
        answered = 0
        servers = []
        for _ in range(clients):
            s = Server()
            await s.listen(0, interface="127.0.0.1")
            await s.bootstrap([("127.0.0.1", port)])
            servers.append(s)
        target = Node(node_id, "127.0.0.1", port)

        async def ask(s: Server) -> None:
            nonlocal answered
            for _ in range(requests):
                ok, _ = await s.protocol.call_find_node(target, Node(os.urandom(20)))
                answered += bool(ok)

        before = cpu()
        await asyncio.gather(*(ask(s) for s in servers))
        used = cpu() - before
        for s in servers:
            s.stop()
        return answered, used

    return asyncio.run(main())


def child(impl: str, n: int, ops: int, seed: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            impl,
            "--nodes",
            str(n),
            "--ops",
            str(ops),
            "--seed",
            str(seed),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--ops", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=40, help="FIND_NODEs from each client")
    ap.add_argument("--child", choices=["kademlia", "p2psched"], help=argparse.SUPPRESS)
    ap.add_argument("--serve", choices=["kademlia", "p2psched"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve)
        return
    if a.child:
        run = run_kademlia if a.child == "kademlia" else run_p2psched
        print(json.dumps(run(a.nodes, a.ops, a.seed)))
        return
    kad = child("kademlia", a.nodes, a.ops, a.seed)
    ours = child("p2psched", a.nodes, a.ops, a.seed)
    kad_cost = serving_cost("kademlia", a.clients, a.requests)
    our_cost = serving_cost("p2psched", a.clients, a.requests)
    ms = 1000.0
    print(
        f"DHT benchmark: N={a.nodes} nodes on 127.0.0.1, "
        f"{a.ops} stores and {a.ops} gets, one at a time"
    )
    print(f"{'':26}{'p2psched':>14}{'kademlia':>14}{'ratio':>10}")
    rows = [
        ("swarm set-up (s)", ours["setup"], kad["setup"], 1.0),
        ("store p50 (ms)", statistics.median(ours["store"]), statistics.median(kad["store"]), ms),
        ("store p99 (ms)", pct(ours["store"], 0.99), pct(kad["store"], 0.99), ms),
        ("get p50 (ms)", statistics.median(ours["get"]), statistics.median(kad["get"]), ms),
        ("get p99 (ms)", pct(ours["get"], 0.99), pct(kad["get"], 0.99), ms),
        ("memory per node (KiB)", ours["mem"] / 1024, kad["mem"] / 1024, 1.0),
    ]
    for name, x, y, scale in rows:
        print(f"{name:26}{x * scale:>14.2f}{y * scale:>14.2f}{x / y:>10.2f}")
    served = our_cost["answered"] / our_cost["cpu"]
    kad_served = kad_cost["answered"] / kad_cost["cpu"]
    ratio = served / kad_served
    print(f"{'requests served / CPU s':26}{served:>14.0f}{kad_served:>14.0f}{ratio:>10.2f}")
    print(f"{'gets that found the value':26}{ours['found']:>14}{kad['found']:>14}")
    print(f"{'FIND_NODE recall':26}{ours['recall']:>14.4f}{'n/a':>14}")
    print(f"{'lookup hops (mean)':26}{ours['hops']:>14.2f}{'n/a':>14}")
    print(f"{'datagrams dropped':26}{ours['dropped']:>14}{'n/a':>14}")
    print(
        "p2psched authenticates every datagram (X25519 pair keys + BLAKE2b MAC, "
        "Ed25519 on first contact);"
    )
    print("kademlia authenticates nothing.")
    store_ratio = statistics.median(ours["store"]) / statistics.median(kad["store"])
    get_ratio = statistics.median(ours["get"]) / statistics.median(kad["get"])
    print(
        f"dht N={a.nodes} store_p50_ratio={store_ratio:.3f} "
        f"get_p50_ratio={get_ratio:.3f} recall={ours['recall']:.4f} "
        f"served_per_cpu_s={served:.0f}/{kad_served:.0f}"
    )


if __name__ == "__main__":
    main()
