"""The operator's commands against the node running on --data-dir: `top`, `ui`, `peers`,
`scheduler show|set|predict-mode`; `workers`, which asks that node, or the network itself
through a gate, which workers match a need; and `challenge`, which has that node check the
capacity a worker's ad claims.

Promises: --json prints what the node (or the DHT) answered, one document (one line per worker
for `workers`); a need that does not parse is refused before anything is asked.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from p2psched.api.endpoint import TOKEN_FILE
from p2psched.cli.args import (
    UsageError,
    add_command,
    data_dir,
    parse_hostport,
    trust_options,
    trusted_networks,
)
from p2psched.cli.dht import GATE_SILENT, join, near
from p2psched.cli.show import client, print_table, view

if TYPE_CHECKING:
    from p2psched.cli.args import Subcommands
    from p2psched.resources.need import Need

WORKER = "9f3c0a" + "0" * 58  # a worker's node id, in the examples


def cmd_peers(args: argparse.Namespace) -> None:
    answer = view(args, "/v1/peers")
    if answer is None:
        return
    print_table(
        ("NODE", "ADDRESS", "SEEN", "FAILS"),
        (
            (p["node_id"], p["address"], f"{p['last_seen_s']:g}s ago", p["failures"])
            for p in answer["peers"]
        ),
        right={"SEEN", "FAILS"},
    )
    print(f"{len(answer['peers'])} peers in the routing table")


def cmd_top(args: argparse.Namespace) -> None:
    from p2psched.cli import top

    if args.interval <= 0:
        raise UsageError(f"--interval {args.interval:g}: give a number of seconds above 0")
    with client(args) as node:
        top.run(node, interval=args.interval, once=args.once)


def cmd_ui(args: argparse.Namespace) -> None:
    """The dashboard's address, with the token in the fragment (browsers never send it)."""
    with client(args) as node:
        url = node.url
    token = (data_dir(args) / TOKEN_FILE).read_text().strip()
    for wildcard in ("//0.0.0.0:", "//[::]:"):  # bound to all: a browser here uses loopback
        url = url.replace(wildcard, "//127.0.0.1:" if "." in wildcard else "//[::1]:")
    print(f"{url}/ui#token={token}")


def cmd_scheduler(args: argparse.Namespace) -> None:
    with client(args) as node:
        if args.scheduler_command == "set":
            node.post("/v1/scheduler/set", {"name": args.name})
        elif args.scheduler_command == "predict-mode":
            if args.table and args.mode != "lookup_table":
                raise UsageError(f"--table goes with lookup_table, not {args.mode!r}")
            table = _table(args.table) if args.table else None
            node.post("/v1/scheduler/predict_mode", {"mode": args.mode, "table": table})
        now = node.get("/v1/scheduler")
    if args.json:
        print(json.dumps(now))
        return
    print(f"strategy {now['strategy']} (of {', '.join(now['strategies'])})")
    print(f"predict mode {now['predict_mode']} (of {', '.join(now['predict_modes'])})")


def _table(path: str) -> Any:
    """A lookup table file's JSON, checked here first, so that a refusal names the file."""
    from p2psched.scheduler.lookup_table import LookupTable
    from p2psched.wire.schema import SchemaError

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        LookupTable.from_json(doc, path)
    except OSError as e:
        raise UsageError(f"--table {path}: {e.strerror}") from None
    except SchemaError as e:
        raise UsageError(f"--table {e}") from None
    except (ValueError, RecursionError) as e:  # (not JSON, not UTF-8, or nested too deep)
        raise UsageError(f"--table {path}: not a JSON table ({e})") from None
    return doc


def cmd_workers(args: argparse.Namespace) -> None:
    from p2psched.resources.need import Need, NeedError

    try:
        need = Need.parse(args.need)
    except NeedError as e:
        raise UsageError(f"--need: {e}") from None
    if args.gate is None:  # ask the node running on --data-dir
        with client(args) as node:
            _show_workers(args, str(need), node.get("/v1/workers", need=args.need)["workers"])
        return
    ads = _workers_through_gate(args, need)
    _show_workers(args, str(need), ads)


def cmd_challenge(args: argparse.Namespace) -> None:
    worker = args.worker.strip().lower()
    with client(args) as node:
        path = f"/v1/workers/{quote(worker, safe='')}/challenge"
        got = node.post(path, {"n": args.n, "rows": args.rows})
    if args.json:
        print(json.dumps(got))
    else:
        verdict = "passed" if got["passed"] else "refused" if got["refused"] else "FAILED"
        print(
            f"worker {got['worker'][:16]}: {verdict}"
            + (f": {got['reason']}" if got["reason"] else "")
        )
        measured, claimed = got["measured_s"], got["claimed_s"]
        print(
            (f"{got['rounds']} " if got["rounds"] > 1 else "")
            + f"{got['n']}x{got['n']} product{'s' if got['rounds'] > 1 else ''}, "
            f"{got['rows']} rows checked; its ad implies "
            f"{got['expected_s']:.3g} s (limit {got['limit_s']:.3g} s)"
            + (f", root after {measured:.3g} s" if measured is not None else "")
            + (f" (it says {claimed:.3g} s)" if claimed is not None else "")
            + (f"; paid {got['price']:g}" if got["passed"] else "")
        )
    if not got["passed"]:
        sys.exit(1)


def _workers_through_gate(args: argparse.Namespace, need: Need) -> list[dict[str, Any]]:
    """Ask the DHT itself, as a short-lived client joined through --gate."""
    import trio

    from p2psched.dht.node import open_dht_node
    from p2psched.dht.protocol import DhtConfig
    from p2psched.identity import identity_for_a_look
    from p2psched.scheduler.ads import ad_json
    from p2psched.scheduler.discovery import Discovery

    gate = parse_hostport(args.gate, "--gate")
    identity = identity_for_a_look(data_dir(args))
    found: list[dict[str, Any]] = []

    config = DhtConfig(client=True, trusted=trusted_networks(args))

    async def main() -> None:
        async with open_dht_node(identity, host=near(gate), config=config) as node:
            await join(node, [gate], GATE_SILENT.format(args.gate))
            ads = await Discovery(node).find(need)
            found.extend(ad_json(ad, node.now()) for ad in ads)

    trio.run(main)
    return found


def _load(workload: dict[str, float], gpus: bool) -> str:
    """What its ad last said of its load, as "cpu 12% gpu 90%" (its GPUs' if it has some)."""
    said = f"cpu {workload['cpu']:.0%}"
    return f"{said} gpu {workload['gpu']:.0%}" if gpus else said


def _show_workers(args: argparse.Namespace, need: str, ads: list[dict[str, Any]]) -> None:
    ads = sorted(ads, key=_standing)  # (stable: the equals as the network found them)
    if args.json:
        for ad in ads:
            print(json.dumps(ad))
        return
    print(f"{len(ads)} worker(s) matching {need}")
    print_table(
        (
            "NODE",
            "GPUS",
            "RAM",
            "CPUS",
            "PRICE",
            "SLOTS",
            "LOAD",
            "MODELS",
            "VERIFIED/DISPUTED",
            "CAPACITY",
        ),
        (
            (
                ad["node_id"][:16],
                ", ".join(f"{g['family']} {g['vram_gb']:g}G" for g in ad["gpus"]) or "-",
                f"{ad['ram_gb']:g}",
                ad["cpu"]["cores"],
                f"{ad['price']:g}",
                ad["free_slots"],
                _load(ad["workload"], bool(ad["gpus"])),
                ", ".join(ad["models"]) or "-",
                *_reputation(ad.get("reputation")),
            )
            for ad in ads
        ),
        right={"RAM", "CPUS", "PRICE", "SLOTS", "VERIFIED/DISPUTED"},
    )
    for ad in ads:
        if (r := ad.get("reputation")) and r["barred"]:
            until = datetime.fromtimestamp(r["barred_until"], UTC).strftime("%Y-%m-%d %H:%M UTC")
            print(f"{ad['node_id'][:16]} is skipped until {until}: {r['barred_for']}")


def _standing(ad: dict[str, Any]) -> tuple[int, ...]:
    """Where a worker ranks by this node's record of it, the best first: skipped for its
    reputation last, then by its disputed results, failed capacity challenges and run times
    claimed far from those measured."""
    r = ad.get("reputation") or {}
    keys = ("barred", "disputed", "challenges_failed", "duration_mismatches")
    return tuple(int(r.get(k) or 0) for k in keys)


def _reputation(r: dict[str, Any] | None) -> tuple[str, str]:
    """This node's record of a worker's results and capacity ("-": none, asked through a
    gate or never used)."""
    if r is None:
        return "-", "-"
    return f"{r['verified']}/{r['disputed']}", r["capacity"]


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    sp = add_command(
        sub,
        "top",
        "the running node at a glance, refreshed",
        ["p2psched top --data-dir .devnet/gate"],
        parents=[common],
        more="(README: Operating a node: API, dashboard, top, metrics and logs)",
    )
    sp.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    sp.add_argument("--once", action="store_true", help="draw once and exit")
    sp.set_defaults(func=cmd_top)
    sp = add_command(
        sub,
        "ui",
        "print the web dashboard's address (with its token) for a browser",
        ["p2psched ui --data-dir .devnet/gate"],
        parents=[common],
        more="(README: Operating a node: API, dashboard, top, metrics and logs)",
    )
    sp.set_defaults(func=cmd_ui)
    sp = add_command(
        sub,
        "peers",
        "the DHT peers of the running node",
        ["p2psched peers --data-dir .devnet/gate"],
        parents=[common],
    )
    sp.add_argument("--json", action="store_true", help="print the node's answer as JSON")
    sp.set_defaults(func=cmd_peers)
    _register_scheduler(sub, common)

    sp = add_command(
        sub,
        "workers",
        "list the workers that match a need, with this node's record of their results",
        ["p2psched workers --need 'gpu=A100,vram>=40' --data-dir .devnet/gate"],
        parents=[common],
        more="Asks the node running on --data-dir, or with --gate the network itself.",
    )
    sp.add_argument(
        "--gate",
        metavar="HOST:PORT",
        help="a gate of the network (default: ask the node running on --data-dir)",
    )
    sp.add_argument(
        "--need",
        default="",
        help="for example: gpu=A100,vram>=40,model=llama-3-8b (default: any worker)",
    )
    sp.add_argument("--json", action="store_true", help="one JSON object per worker")
    trust_options(sp)
    sp.set_defaults(func=cmd_workers)

    sp = add_command(
        sub,
        "challenge",
        "check that a worker has the capacity its ad claims (a timed matrix product)",
        [
            f"p2psched challenge {WORKER} --data-dir .devnet/gate",
            f"p2psched challenge {WORKER} --n 1024 --rows 16 --data-dir .devnet/gate",
        ],
        parents=[common],
        more=f"{WORKER} stands for a worker's node id (64 hex digits, as `p2psched workers "
        "--json` shows it). The node running on --data-dir sends it a seed; it multiplies "
        "n x n matrices made from it (in rounds, as many as its claim needs, without --n), "
        "commits to the products' Merkle root, then opens --rows "
        "rows picked at random, each checked with its proof, and its time against what its "
        "ad claims. Paid at its price if it passes; exit status 1 if it did not. "
        "(README: Proof of claimed capacity)",
    )
    sp.add_argument("worker", metavar="WORKER", help="the worker's node id (64 hex digits)")
    sp.add_argument(
        "--n", type=int, default=None, help="the matrices' size, 16..4096 (default: from its ad)"
    )
    sp.add_argument("--rows", type=int, default=8, help="rows to open and check, 1..64")
    sp.add_argument("--json", action="store_true", help="print the node's answer as JSON")
    sp.set_defaults(func=cmd_challenge)


def _register_scheduler(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    about = "(README: Scheduling: strategies, predictor, durable state, ledger)"
    sched = add_command(
        sub,
        "scheduler",
        "the running node's scheduling strategy and predictor: show, set, predict-mode",
        ["p2psched scheduler show --data-dir .devnet/gate"],
        more=about,
    ).add_subparsers(dest="scheduler_command", required=True)
    sp = add_command(
        sched,
        "show",
        "the strategy and predict mode in use",
        ["p2psched scheduler show --data-dir .devnet/gate"],
        parents=[common],
    )
    sp.add_argument("--json", action="store_true", help="print the node's answer as JSON")
    sp.set_defaults(func=cmd_scheduler)
    sp = add_command(
        sched,
        "set",
        "switch the strategy, for every job",
        ["p2psched scheduler set shortest_queue --data-dir .devnet/gate"],
        parents=[common],
        more=about,
    )
    sp.add_argument(
        "name", help="cost, shortest_queue, round_robin, weighted, probabilistic or late_binding"
    )
    sp.add_argument("--json", action="store_true", help="print the node's answer as JSON")
    sp.set_defaults(func=cmd_scheduler)
    sp = add_command(
        sched,
        "predict-mode",
        "switch the predictor's mode",
        [
            "p2psched scheduler predict-mode lookup_table --data-dir .devnet/gate",
            "p2psched scheduler predict-mode lookup_table --table t.json --data-dir .devnet/gate",
        ],
        parents=[common],
        more=about,
    )
    sp.add_argument("mode", help="default (learned) or lookup_table (a table, frozen or --table)")
    sp.add_argument(
        "--table",
        metavar="FILE",
        help="with lookup_table: a JSON table file to load and answer from",
    )
    sp.add_argument("--json", action="store_true", help="print the node's answer as JSON")
    sp.set_defaults(func=cmd_scheduler)
