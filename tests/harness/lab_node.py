"""One DHT node of a lab, as a process (`python -m tests.harness.lab_node`), for LAN tests.

A member joins through --bootstrap, publishes its own record under the key "lab", prints
`ready` and serves until killed. A prober (--probe) joins as a fresh node, looks up "lab" once
and prints one JSON line of what that took: records found, its routing table, its queries.
Both run `DhtNode` as the node does, with the routing trust the flags ask for (as the CLI's).
"""

from __future__ import annotations

import argparse
import json

import trio

from p2psched.cli.args import parse_hostport, trust_options, trusted_networks
from p2psched.cli.dht import key_of
from p2psched.dht.node import DhtNode, open_dht_node
from p2psched.dht.protocol import DhtConfig
from p2psched.identity import Identity

LAB_KEY = key_of("lab")
RECORD_TTL = 600.0


def probe_report(node: DhtNode, records: int) -> dict[str, int]:
    """What a lookup cost the node that ran it, from its own counters."""
    routing = node.protocol.routing
    sent = node.protocol.rpcs_sent
    return {
        "records": records,
        "routing": len(routing),
        "refused_by_ip": routing.refused_by_ip,
        "value_queries": sum(n for (name, _), n in sent.items() if name == "find_value"),
        "timed_out": sum(n for (_, outcome), n in sent.items() if outcome == "timed_out"),
    }


async def run(args: argparse.Namespace) -> None:
    host, port = parse_hostport(args.listen, "--listen")
    seeds = [parse_hostport(b, "--bootstrap") for b in args.bootstrap]
    config = DhtConfig(trusted=trusted_networks(args))
    async with open_dht_node(Identity.generate(), host=host, port=port, config=config) as node:
        if seeds:
            await node.bootstrap(seeds)
        if args.probe:
            records = await node.get(LAB_KEY)
            print(json.dumps(probe_report(node, len(records))), flush=True)
            return
        await node.put(LAB_KEY, node.node_id.hex().encode(), ttl=RECORD_TTL)
        print("ready", flush=True)
        await trio.sleep_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="lab_node")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--probe", action="store_true", help="look up the lab once and exit")
    trust_options(parser)
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
