"""The `p2psched` command line.

Owns: argument parsing, turning user errors into one clear line on stderr with exit status 2, and
running the chosen service under trio until Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import trio

from p2psched import devnet, logs, top
from p2psched.api.client import ApiCallError, ControlClient
from p2psched.api.control import ledger_view, serve_api
from p2psched.devnet import DevnetError
from p2psched.dht.node import DhtNode, open_dht_node
from p2psched.dht.protocol import DhtConfig
from p2psched.dht.records import MAX_VALUE_BYTES
from p2psched.dht.routing import as_int
from p2psched.gate.relay import RelayLimits
from p2psched.identity import (
    IdentityError,
    create_identity,
    default_data_dir,
    load_identity,
    load_or_create_identity,
)
from p2psched.node.node import (
    STORE_FILE,
    JoinError,
    Node,
    WorkerRole,
    bind_host_toward,
    open_node,
)
from p2psched.resources.need import Need, NeedError
from p2psched.resources.profile import Gpu
from p2psched.scheduler.ads import ad_json
from p2psched.scheduler.discovery import Discovery
from p2psched.scheduler.job import JobSpecError, load_job
from p2psched.store import Store, StoreError
from p2psched.submit import SubmitError, run_submit
from p2psched.wire.address import host_port
from p2psched.worker.config import ConfigError, WorkerConfig, load_config


class UsageError(Exception):
    """A mistake on the command line; the message says what and how to fix it."""


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


def _route_host(bound_host: str, toward: tuple[str, int]) -> str:
    """The host others can reach this node at: the bound one, or, for a wildcard bind, this
    machine's address on the route to `toward` (no packet is sent to find it)."""
    if bound_host not in ("0.0.0.0", "::"):
        return bound_host
    family = socket.AF_INET6 if ":" in toward[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(toward)
        return str(probe.getsockname()[0])


def key_of(text: str) -> bytes:
    """DHT keys are 32 bytes; on the command line a key is any text, hashed with SHA-256."""
    return hashlib.sha256(text.encode()).digest()


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


# -- commands ------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    identity = create_identity(_data_dir(args))
    print(f"created identity {identity.node_id.hex()} in {_data_dir(args)}")


def cmd_id(args: argparse.Namespace) -> None:
    print(load_identity(_data_dir(args)).node_id.hex())


def _config(args: argparse.Namespace) -> DhtConfig:
    return DhtConfig(client=getattr(args, "client", False))


async def _joined_node(args: argparse.Namespace, node: DhtNode) -> None:
    if args.bootstrap:
        seeds = [parse_hostport(b, "--bootstrap") for b in args.bootstrap]
        await _join(
            node,
            seeds,
            f"no bootstrap node answered at {', '.join(args.bootstrap)}; "
            "check the addresses and that those nodes are running",
        )


def cmd_dht_serve(args: argparse.Namespace) -> None:
    host, port = parse_hostport(args.listen, "--listen")
    identity = load_or_create_identity(_data_dir(args))

    async def main() -> None:
        async with open_dht_node(identity, host=host, port=port, config=_config(args)) as node:
            await _joined_node(args, node)
            mode = "client" if args.client else "server"
            print(
                f"dht node {node.node_id.hex()} listening on "
                f"{node.address[0]}:{node.address[1]} ({mode})"
            )
            print(
                f"routing table: {len(node.protocol.routing)} contacts; Ctrl-C to stop", flush=True
            )
            await trio.sleep_forever()

    trio.run(main)


def cmd_dht_put(args: argparse.Namespace) -> None:
    value = args.value.encode()
    if len(value) > MAX_VALUE_BYTES:
        raise UsageError(
            f"the value is {len(value)} bytes; a record holds at most {MAX_VALUE_BYTES}"
        )
    max_ttl = DhtConfig().store.max_ttl
    if not 0 < args.ttl <= max_ttl:
        raise UsageError(f"--ttl {args.ttl:g}: choose between 1 and {max_ttl:.0f} seconds")
    identity = load_or_create_identity(_data_dir(args))

    async def main() -> None:
        async with open_dht_node(
            identity, host=_bind_for(args), config=DhtConfig(client=True)
        ) as node:
            await _joined_node(args, node)
            stored = await node.put(key_of(args.key), value, ttl=args.ttl)
            print(
                f"stored {args.key!r} on {stored} nodes "
                f"(expires in {args.ttl:.0f}s unless republished)"
            )

    trio.run(main)


def cmd_dht_get(args: argparse.Namespace) -> None:
    identity = load_or_create_identity(_data_dir(args))

    async def main() -> None:
        async with open_dht_node(
            identity, host=_bind_for(args), config=DhtConfig(client=True)
        ) as node:
            await _joined_node(args, node)
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


def _bind_for(args: argparse.Namespace) -> str:
    """Bind a short-lived client where it can reach its (first) bootstrap node."""
    return _near(parse_hostport(args.bootstrap[0], "--bootstrap"))


def cmd_demo(args: argparse.Namespace) -> None:
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


# -- roles: gate, worker, and finding workers ------------------------------------------------------


def _near(peer: tuple[str, int]) -> str:
    return bind_host_toward(peer[0])


_GATE_SILENT = "the gate at {} did not answer; check the address and that it runs"


async def _join(node: DhtNode, seeds: list[tuple[str, int]], failure: str) -> None:
    if await node.bootstrap(seeds) == 0:
        raise UsageError(failure)


def _api_bind(args: argparse.Namespace) -> tuple[str, int]:
    """Where the control API listens: loopback unless the operator says otherwise, twice."""
    host = args.api_host
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        raise UsageError(f"--api-host {host!r} is not an IP address") from None
    if not loopback and not args.api_remote:
        raise UsageError(
            f"--api-host {host} would open the control API beyond this machine; add "
            "--api-remote if that is meant (every request still needs the token in "
            f"{_data_dir(args) / 'api.token'})"
        )
    return host.strip("[]"), args.api_port


async def _serve_node(node: Node, headline: str, api: tuple[str, int]) -> None:
    """Serve the control API, say where everything is, and wait for SIGTERM or Ctrl-C."""
    with trio.open_signal_receiver(signal.SIGTERM) as terminate:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve_api(
                    node, host=api[0], port=api[1], task_status=task_status
                )
            )
            host, port = node.dht.address
            print(headline.format(id=node.node_id.hex(), dht=host_port(host, port)))
            print(f"  control API {url} (token in {node.data_dir / 'api.token'})", flush=True)
            async for _ in terminate:
                nursery.cancel_scope.cancel()
                return


def cmd_gate(args: argparse.Namespace) -> None:
    if args.action == "status":
        _gate_status(args)
        return
    api = _api_bind(args)
    host, port = parse_hostport(args.listen, "--listen")
    data_dir = _data_dir(args)
    identity = load_or_create_identity(data_dir)
    seeds = [parse_hostport(other, "--bootstrap") for other in args.bootstrap]
    limits = _relay_limits(Path(args.config)) if args.config else None

    async def main() -> None:
        async with open_node(
            identity,
            data_dir,
            host=host,
            port=port,
            seeds=seeds,
            gate=True,
            resume=True,
            relay_limits=limits,
        ) as n:
            await _serve_node(
                n,
                "gate {id} listening on {dht} (DHT on UDP, relay on TCP)\n"
                "  workers join with: p2psched worker join --gate HOST:PORT; Ctrl-C to stop\n"
                "  its relay: p2psched gate status",
                api,
            )

    trio.run(main)


def _relay_limits(path: Path) -> RelayLimits:
    """The [relay] table of a gate's TOML config."""
    from p2psched.gate.config import GateConfigError, load_relay_limits

    try:
        return load_relay_limits(path)
    except GateConfigError as e:
        raise UsageError(f"--config {e}") from None


def _gate_status(args: argparse.Namespace) -> None:
    status = _view(args, "/v1/gate")
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
    api = _api_bind(args)
    gates = [parse_hostport(g, "--gate") for g in args.gate]
    host, port = parse_hostport(args.listen, "--listen") if args.listen else (_near(gates[0]), 0)
    data_dir = _data_dir(args)
    identity = load_or_create_identity(data_dir)

    async def main() -> None:
        async with open_node(
            identity,
            data_dir,
            host=host,
            port=port,
            seeds=gates,
            dht_client=args.client,
            resume=True,
        ) as n:
            await _serve_node(
                n,
                "node {id} joined through " + ", ".join(args.gate) + "; DHT on {dht}\n"
                "  submit jobs to it with: p2psched submit JOB.yaml; Ctrl-C to stop",
                api,
            )

    trio.run(main)


def cmd_worker_join(args: argparse.Namespace) -> None:
    api = _api_bind(args)
    gates = [parse_hostport(g, "--gate") for g in args.gate]
    config = load_config(Path(args.config)) if args.config else WorkerConfig()
    host, port = parse_hostport(args.listen, "--listen") if args.listen else (_near(gates[0]), 0)
    data_dir = _data_dir(args)
    identity = load_or_create_identity(data_dir)
    max_ttl = DhtConfig().store.max_ttl
    if not 2 <= args.ad_ttl <= max_ttl:
        raise UsageError(f"--ad-ttl {args.ad_ttl:g}: choose between 2 and {max_ttl:.0f} seconds")
    advertise = _route_host(host, gates[0])

    async def main() -> None:
        async with open_node(
            identity,
            data_dir,
            host=host,
            port=port,
            seeds=gates,
            worker=config,
            advertise_host=advertise,
            ad_ttl=args.ad_ttl,
            resume=True,
            reachability=args.reachability,
        ) as node:
            assert node.worker is not None
            try:
                _describe_worker(args, node.worker, config)
                await _serve_node(
                    node, "  DHT on {dht}; Ctrl-C to leave (the ad is withdrawn)", api
                )
            finally:
                print("ad withdrawn", flush=True)

    trio.run(main)


def _describe_worker(args: argparse.Namespace, worker: WorkerRole, config: WorkerConfig) -> None:
    detected, profile = worker.detected, worker.advert.profile
    print(f"worker {worker.service.identity.node_id.hex()} joined through {', '.join(args.gate)}")
    print(f"  reachability: {worker.reachability} ({worker.why})")
    if worker.relay is not None:
        print("  schedulers reach it through its gate's relay; it accepts no inbound connection")

    def gpus(found: tuple[Gpu, ...]) -> str:
        return ", ".join(f"{g.model} ({g.vram_gb:g} GiB)" for g in found) or "none"

    print(
        f"  detected: {detected.cpu_model}, {detected.cpu_cores} cores, "
        f"{detected.ram_gb:g} GiB RAM, {detected.disk_gb:g} GiB free disk; "
        f"GPUs: {gpus(detected.gpus)}"
    )
    for note in detected.notes:
        print(f"  note: {note}")
    if config.override:
        print(f"  overridden by {args.config}: {', '.join(sorted(config.override))}")
    print(
        f"  advertised: GPUs {gpus(profile.gpus)}; {profile.cpu_cores} cores, "
        f"{profile.ram_gb:g} GiB RAM; "
        f"models {', '.join(profile.installed_models) or 'none'}; "
        f"drivers {', '.join(profile.drivers)}; {profile.free_slots} slot(s) "
        f"at {profile.min_price:g} or more per task"
    )
    places = ", ".join(worker.advert.capabilities)
    print(f"  ad (TTL {args.ad_ttl:g}s) under {places}; tasks on {worker.address}")


def cmd_workers(args: argparse.Namespace) -> None:
    try:
        need = Need.parse(args.need)
    except NeedError as e:
        raise UsageError(f"--need: {e}") from None
    if args.gate is None:  # ask the node running on --data-dir
        with _client(args) as client:
            _show_workers(args, need, client.get("/v1/workers", need=args.need))
        return
    gate = parse_hostport(args.gate, "--gate")
    identity = load_or_create_identity(_data_dir(args))

    async def main() -> None:
        async with open_dht_node(identity, host=_near(gate), config=DhtConfig(client=True)) as node:
            await _join(node, [gate], _GATE_SILENT.format(args.gate))
            ads = await Discovery(node).find(need)
            _show_workers(args, need, [ad_json(ad, node.now()) for ad in ads])

    trio.run(main)


def _show_workers(args: argparse.Namespace, need: Need, ads: list[dict[str, Any]]) -> None:
    if args.json:
        for ad in ads:
            print(json.dumps(ad))
        return
    print(f"{len(ads)} worker(s) matching {need}")
    head = ("NODE", "GPUS", "RAM", "CPUS", "PRICE", "SLOTS")
    print("{:<16}  {:<24}  {:>6}  {:>4}  {:>7}  {:>5}  MODELS".format(*head))
    for ad in ads:
        gpus = ", ".join(f"{g['family']} {g['vram_gb']:g}G" for g in ad["gpus"]) or "-"
        print(
            f"{ad['node_id'][:16]}  {gpus:<24}  {ad['ram_gb']:>6g}  {ad['cpu']['cores']:>4}  "
            f"{ad['price']:>7g}  {ad['free_slots']:>5}  {', '.join(ad['models']) or '-'}"
        )


def _view(args: argparse.Namespace, path: str, **params: Any) -> Any:
    """GET `path` from the running node's API: printed as JSON (and None returned) with
    --json, else returned for the command to show."""
    with _client(args) as client:
        got = client.get(path, **params)
    if args.json:
        print(json.dumps(got))
        return None
    return got


def _client(args: argparse.Namespace) -> ControlClient:
    client = ControlClient.find(_data_dir(args))
    if client is None:
        raise UsageError(
            f"no node runs on {_data_dir(args)}; start one (p2psched node --gate HOST:PORT, "
            "or worker join) or pass the --data-dir of one that runs"
        )
    return client


def cmd_submit(args: argparse.Namespace) -> None:
    gate = parse_hostport(args.gate, "--gate") if args.gate else None
    code = run_submit(
        Path(args.job),
        _data_dir(args),
        gate=gate,
        results=Path(args.results),
        as_json=args.json,
        detach=args.detach,
    )
    sys.exit(code)


def cmd_worker_drain(args: argparse.Namespace) -> None:
    action = "drain" if args.worker_command == "drain" else "undrain"
    with _client(args) as client:
        answer = client.post(f"/v1/worker/{action}", {})
    if answer["draining"]:
        print(f"draining: takes no new tasks; {answer['held']} still held here")
    else:
        print("taking tasks again")


def cmd_peers(args: argparse.Namespace) -> None:
    answer = _view(args, "/v1/peers")
    if answer is None:
        return
    print(f"{'NODE':<66} {'ADDRESS':<24} {'SEEN':>8} {'FAILS':>5}")
    for p in answer["peers"]:
        seen = f"{p['last_seen_s']:g}s ago"
        print(f"{p['node_id']:<66} {p['address']:<24} {seen:>8} {p['failures']:>5}")
    print(f"{len(answer['peers'])} peers in the routing table")


def cmd_top(args: argparse.Namespace) -> None:
    if args.interval <= 0:
        raise UsageError(f"--interval {args.interval:g}: give a number of seconds above 0")
    with _client(args) as client:
        top.run(client, interval=args.interval, once=args.once)


def cmd_ui(args: argparse.Namespace) -> None:
    """The dashboard's address, with the token in the fragment (browsers never send it)."""
    with _client(args) as client:
        url = client.url
    token = (_data_dir(args) / "api.token").read_text().strip()
    for wildcard in ("//0.0.0.0:", "//[::]:"):  # bound to all: a browser here uses loopback
        url = url.replace(wildcard, "//127.0.0.1:" if "." in wildcard else "//[::1]:")
    print(f"{url}/ui#token={token}")


def cmd_jobs(args: argparse.Namespace) -> None:
    jobs = _view(args, "/v1/jobs")
    if jobs is None:
        return
    print(f"{'JOB':<28} {'STATE':<8} {'DONE':>11} {'FAILED':>6} {'SPENT':>9}")
    for j in jobs:
        done = f"{j['completed']}/{j['total']}"
        print(f"{j['job']:<28} {j['state']:<8} {done:>11} {j['failed']:>6} {j['spent']:>9g}")


def cmd_status(args: argparse.Namespace) -> None:
    status = _view(args, f"/v1/jobs/{quote(args.job, safe='')}")
    if status is None:
        return
    print(f"job {status['job']}: {status['state']}, {status['completed']}/{status['total']} done")
    for state, n in sorted(status["counts"].items()):
        print(f"  {state:<12} {n}")
    print(
        f"  spent {status['spent']:g}, committed {status['committed']:g}, "
        f"{status['workers']} worker(s), {status['elapsed_s']:.1f}s"
    )


def cmd_tasks(args: argparse.Namespace) -> None:
    params = {"state": args.state} if args.state else {}
    tasks = _view(args, f"/v1/jobs/{quote(args.job, safe='')}/tasks", **params)
    if tasks is None:
        return
    for t in tasks:
        worker = (t["worker"] or "-")[:16]
        print(f"{t['task']:<32} {t['state']:<12} {worker:<16} {t['error'] or ''}")


def cmd_history(args: argparse.Namespace) -> None:
    job, _, index = args.task.rpartition("/")
    if not job or not index.isdigit():
        raise UsageError(f"{args.task!r}: give a task as JOB/N (see p2psched tasks JOB)")
    view = _view(args, f"/v1/jobs/{quote(job, safe='')}/tasks/{index}/history")
    if view is None:
        return
    print(f"{view['task']}: {view['state']}")
    for m in view["transitions"]:
        when = (
            time.strftime("%H:%M:%S", time.localtime(m["at"])) + f".{int(m['at'] % 1 * 1000):03d}"
        )
        print(f"  {when}  {m['from']:>11} -> {m['to']:<11} {m['reason'] or ''}")


def cmd_cancel(args: argparse.Namespace) -> None:
    job, slash, task = args.target.partition("/")
    if not job or (slash and not task):
        raise UsageError(f"{args.target!r}: give a job (JOB) or one of its tasks (JOB/N)")
    tasks = [args.target] if task else None
    with _client(args) as client:
        path = f"/v1/jobs/{quote(job, safe='')}/cancel"
        cancelled = client.post(path, {"tasks": tasks})["cancelled"]
    print(f"cancelled {len(cancelled)} task(s)")


def cmd_scheduler(args: argparse.Namespace) -> None:
    with _client(args) as client:
        if args.scheduler_command == "set":
            client.post("/v1/scheduler/set", {"name": args.name})
        elif args.scheduler_command == "predict-mode":
            client.post("/v1/scheduler/predict_mode", {"mode": args.mode})
        now = client.get("/v1/scheduler")
    if args.json:
        print(json.dumps(now))
        return
    print(f"strategy {now['strategy']} (of {', '.join(now['strategies'])})")
    print(f"predict mode {now['predict_mode']} (of {', '.join(now['predict_modes'])})")


def cmd_ledger(args: argparse.Namespace) -> None:
    client = ControlClient.find(_data_dir(args))
    if client is not None:
        with client:
            view = client.get("/v1/ledger", verify=str(args.verify).lower())
    else:  # no node runs there: read its store (SQLite lets a reader in beside a writer)
        path = _data_dir(args) / STORE_FILE
        if not path.exists():
            raise UsageError(f"no ledger at {path}: no node has run with --data-dir {path.parent}")
        with Store.open(path) as store:
            view = ledger_view(store, args.verify)
    if args.json:
        print(json.dumps(view))
    else:
        print(f"{'JOB':<32} {'COMMITTED':>10} {'SPENT':>10} {'TASKS PAID':>10}")
        for j in view["jobs"]:
            print(f"{j['job']:<32} {j['committed']:>10g} {j['spent']:>10g} {j['tasks_paid']:>10}")
        print(f"{'PEER':<32} {'SPENT':>10} {'EARNED':>10}")
        for p in view["peers"]:
            print(f"{p['peer'][:32]:<32} {p['spent']:>10g} {p['earned']:>10g}")
        print(f"total spent {view['spent']:g}, earned {view['earned']:g}")
    if args.verify:
        problems = view["problems"]
        for line in problems:
            print(f"problem: {line}", file=sys.stderr)
        print(f"verified every entry from its signature: {len(problems)} problem(s)")
        if problems:
            sys.exit(1)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError(f"{text!r}: a devnet has 1..200 workers")
    return int(text)


def cmd_devnet_up(args: argparse.Namespace) -> None:
    net = devnet.up(Path(args.dir), args.workers, drivers=args.driver or None)
    print(f"devnet up from {net.folder}: gate on {net.gate}, {args.workers} worker(s)")
    print(f"  submit with: p2psched submit examples/hello.yaml --gate {net.gate}")
    print(f"  watch with:  p2psched top --data-dir {net.folder / 'gate'}   (or: ui, for a browser)")
    print(f"  stop with:   p2psched devnet down --dir {args.dir}")


def cmd_devnet_down(args: argparse.Namespace) -> None:
    killed = devnet.down(Path(args.dir))
    print("devnet down" + (f" ({', '.join(killed)} had to be killed)" if killed else ""))


def _show_results(folder: Path, limit: int = 10) -> None:
    for path in sorted(folder.glob("[0-9]*[0-9].json"))[:limit]:
        r = json.loads(path.read_text())
        shown = json.dumps(r["output"]) if r["state"] == "completed" else r["error"]
        print(f"  {r['name']:<24} {r['state']:<10} {shown[:80]}")


def cmd_devnet_demo(args: argparse.Namespace) -> None:
    job = Path(args.job) if args.job else devnet.example_job()
    with tempfile.TemporaryDirectory(prefix="p2psched-devnet-") as tmp:
        folder = Path(tmp)
        print(f"starting a gate and {args.workers} workers on loopback…", flush=True)
        net = devnet.up(folder, args.workers)
        try:
            print(f"submitting {job} through the gate at {net.gate}", flush=True)
            code = run_submit(
                job,
                folder / "client",
                gate=parse_hostport(net.gate, "gate"),
                results=Path(args.results),
                as_json=False,
                detach=False,
            )
            _show_results(Path(args.results) / load_job(job).name)
        finally:
            devnet.down(folder)
            print("devnet stopped", flush=True)
    sys.exit(code)


# -- parsing -------------------------------------------------------------------------------------


def _api_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--api-port", type=_port, default=0, help="control API port (default any)")
    sp.add_argument(
        "--api-host", default="127.0.0.1", help="control API address (default 127.0.0.1)"
    )
    sp.add_argument(
        "--api-remote",
        action="store_true",
        help="allow --api-host to be other than loopback (requests still need the token)",
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        help="this node's directory (identity key, state); default $P2PSCHED_HOME or ~/.p2psched",
    )
    common.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="warning",
        help="log events (to stderr) at this level and above (default warning)",
    )
    common.add_argument(
        "--log-json",
        action="store_true",
        help="log events as JSON lines (ts, level, logger, event, node, job, task, error)",
    )
    p = argparse.ArgumentParser(prog="p2psched", description="A peer-to-peer compute scheduler.")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("init", parents=[common], help="create this node's identity")
    sp.set_defaults(func=cmd_init)
    sp = sub.add_parser("id", parents=[common], help="print this node's id")
    sp.set_defaults(func=cmd_id)

    dht = sub.add_parser("dht", help="run or use a DHT node").add_subparsers(
        dest="dht_command", required=True
    )
    sp = dht.add_parser("serve", parents=[common], help="run a DHT node until Ctrl-C")
    sp.add_argument(
        "--listen", default="0.0.0.0:4000", help="HOST:PORT to bind (default 0.0.0.0:4000)"
    )
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
    sp.set_defaults(func=cmd_dht_serve)
    for name, func, help_ in (
        ("put", cmd_dht_put, "store a signed record"),
        ("get", cmd_dht_get, "print the records under a key"),
    ):
        sp = dht.add_parser(name, parents=[common], help=help_)
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
        sp.set_defaults(func=func)

    sp = sub.add_parser(
        "gate", parents=[common], help="run a gate: the node newcomers join through"
    )
    sp.add_argument(
        "--listen", default="0.0.0.0:4000", help="HOST:PORT to bind (default 0.0.0.0:4000)"
    )
    sp.add_argument(
        "--bootstrap", action="append", default=[], metavar="HOST:PORT", help="another gate"
    )
    sp.add_argument(
        "--config", help="TOML with a [relay] table of limits (see README: Running a gate)"
    )
    _api_options(sp)
    sp.add_argument(
        "action", nargs="?", choices=["status"], help="status: the running gate's relay"
    )
    sp.add_argument("--json", action="store_true", help="status as JSON")
    sp.set_defaults(func=cmd_gate)

    sp = sub.add_parser("node", parents=[common], help="run a node that schedules jobs")
    sp.add_argument(
        "--gate",
        required=True,
        action="append",
        metavar="HOST:PORT",
        help="a gate to join through (repeatable)",
    )
    sp.add_argument("--listen", metavar="HOST:PORT", help="where to bind (default: any free port)")
    sp.add_argument("--client", action="store_true", help="DHT client mode (behind NAT)")
    _api_options(sp)
    sp.set_defaults(func=cmd_node)

    sp = sub.add_parser("submit", parents=[common], help="run a job (job.yaml) on the network")
    sp.add_argument("job", help="the job spec, a YAML file (see examples/)")
    sp.add_argument("--gate", metavar="HOST:PORT", help="join through this gate (no local node)")
    sp.add_argument("--results", default="results", help="folder for results (default results)")
    sp.add_argument("--json", action="store_true", help="print one JSON summary, no progress")
    sp.add_argument(
        "--detach", action="store_true", help="return once the tasks are committed (needs a node)"
    )
    sp.set_defaults(func=cmd_submit)

    sp = sub.add_parser("peers", parents=[common], help="the DHT peers of the running node")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_peers)
    sp = sub.add_parser("top", parents=[common], help="the running node at a glance, refreshed")
    sp.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    sp.add_argument("--once", action="store_true", help="draw once and exit")
    sp.set_defaults(func=cmd_top)
    sp = sub.add_parser("ui", parents=[common], help="the web dashboard's address (with token)")
    sp.set_defaults(func=cmd_ui)
    sp = sub.add_parser("jobs", parents=[common], help="the jobs of the running node")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_jobs)
    sp = sub.add_parser("status", parents=[common], help="one job's progress")
    sp.add_argument("job")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)
    sp = sub.add_parser("tasks", parents=[common], help="one job's tasks")
    sp.add_argument("job")
    sp.add_argument("--state", help="only tasks in this state (e.g. failed)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_tasks)
    sp = sub.add_parser("history", parents=[common], help="a task's transitions, with why")
    sp.add_argument("task", metavar="JOB/N")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_history)
    sp = sub.add_parser("cancel", parents=[common], help="cancel a job (JOB) or a task (JOB/N)")
    sp.add_argument("target", metavar="JOB|TASK")
    sp.set_defaults(func=cmd_cancel)

    sp = sub.add_parser("ledger", parents=[common], help="spent and earned, per job and per peer")
    sp.add_argument("--verify", action="store_true", help="re-check every entry's signature")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_ledger)

    sched = sub.add_parser(
        "scheduler", help="the running node's scheduling strategy and predictor"
    ).add_subparsers(dest="scheduler_command", required=True)
    sp = sched.add_parser("show", parents=[common], help="the strategy and predict mode in use")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_scheduler)
    sp = sched.add_parser("set", parents=[common], help="switch the strategy, for every job")
    sp.add_argument(
        "name", help="cost, shortest_queue, round_robin, weighted, probabilistic or late_binding"
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_scheduler)
    sp = sched.add_parser("predict-mode", parents=[common], help="switch the predictor's mode")
    sp.add_argument("mode", help="default (learned) or lookup_table (frozen table)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_scheduler)

    net = sub.add_parser("devnet", help="a local network of processes").add_subparsers(
        dest="devnet_command", required=True
    )
    sp = net.add_parser("up", help="start a gate and N workers on loopback")
    sp.add_argument("--workers", type=_workers, default=3)
    sp.add_argument("--dir", default=".devnet", help="where their data and logs go")
    sp.add_argument("--driver", action="append", help="drivers the workers enable (repeat)")
    sp.set_defaults(func=cmd_devnet_up)
    sp = net.add_parser("down", help="stop the devnet")
    sp.add_argument("--dir", default=".devnet")
    sp.set_defaults(func=cmd_devnet_down)
    sp = net.add_parser("demo", help="up, run examples/hello.yaml, show the results, down")
    sp.add_argument("--workers", type=_workers, default=3)
    sp.add_argument("--job", help="another job to run (default examples/hello.yaml)")
    sp.add_argument("--results", default="results", help="folder for results (default results)")
    sp.set_defaults(func=cmd_devnet_demo)

    worker = sub.add_parser("worker", help="offer this machine's resources").add_subparsers(
        dest="worker_command", required=True
    )
    sp = worker.add_parser("join", parents=[common], help="join through a gate and advertise")
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
    sp.add_argument("--config", help="the worker's TOML config (prices, drivers, models, labels)")
    sp.add_argument("--listen", metavar="HOST:PORT", help="where to bind (default: any free port)")
    sp.add_argument(
        "--ad-ttl", type=float, default=120.0, help="seconds the ad lives unless renewed"
    )
    _api_options(sp)
    sp.set_defaults(func=cmd_worker_join)
    for name, help_ in (
        ("drain", "take no new tasks, finish those held (the running worker on --data-dir)"),
        ("undrain", "take tasks again"),
    ):
        sp = worker.add_parser(name, parents=[common], help=help_)
        sp.set_defaults(func=cmd_worker_drain)

    sp = sub.add_parser("workers", parents=[common], help="list the workers that match a need")
    sp.add_argument(
        "--gate",
        metavar="HOST:PORT",
        help="a gate of the network (default: ask the node running on --data-dir)",
    )
    sp.add_argument("--need", default="", help="for example: gpu=A100,vram>=40,model=llama-3-8b")
    sp.add_argument("--json", action="store_true", help="one JSON object per worker")
    sp.set_defaults(func=cmd_workers)

    sp = sub.add_parser("demo", help="run a local swarm in this process and show what it does")
    sp.add_argument("--nodes", type=int, default=50, help="how many nodes (default 50)")
    sp.set_defaults(func=cmd_demo)
    return p


def _leaf(e: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (trio wraps what a nursery raises)."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure(getattr(args, "log_level", "warning"), getattr(args, "log_json", False))
    try:
        args.func(args)
    except BaseException as raised:
        e = _leaf(raised)
        if isinstance(
            e,
            (
                UsageError,
                IdentityError,
                ConfigError,
                JobSpecError,
                SubmitError,
                DevnetError,
                JoinError,
                ApiCallError,
                StoreError,
            ),
        ):
            print(f"p2psched: error: {e}", file=sys.stderr)
            sys.exit(2)
        if isinstance(e, KeyboardInterrupt) and args.func in (cmd_submit, cmd_devnet_demo):
            print("interrupted", file=sys.stderr)
            sys.exit(130)  # the job did not finish: a script must not carry on as if it had
        if isinstance(e, KeyboardInterrupt):
            print("stopped", file=sys.stderr)
            sys.exit(0)  # Ctrl-C is how a node is meant to be stopped
        if isinstance(e, httpx.HTTPError):  # the node went away while we talked to it
            print(f"p2psched: error: the node stopped answering ({e})", file=sys.stderr)
            sys.exit(1)
        if isinstance(e, OSError):  # the port is taken, the address is not ours, ...
            print(f"p2psched: error: {e}", file=sys.stderr)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
