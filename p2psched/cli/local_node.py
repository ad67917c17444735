"""The one place the command line reads a node that this process runs, rather than asking a
node through its control API: serving that API for it, and the lines a worker prints about
itself when it joins. When the node facade lands, these reads are the ones to point at it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from p2psched.api.endpoint import TOKEN_FILE

if TYPE_CHECKING:
    from p2psched.api.endpoint import ApiTls
    from p2psched.api.sessions import SessionLimits
    from p2psched.node.config import ServerTable
    from p2psched.node.node import Node
    from p2psched.resources.profile import Gpu
    from p2psched.worker.config import WorkerConfig

    # The control API's host, port, TLS, bounds on signed sessions, and the rest of the
    # config's [server] table (timeouts, the gateway's bounds).
    ApiListen = tuple[str, int, ApiTls | None, SessionLimits, ServerTable]


async def serve_node(node: Node, headline: str, api: ApiListen) -> None:
    """Serve the control API, say where everything is (`headline`, a format string of the
    node's `id`, its DHT's address `dht` and `port`), and wait for SIGTERM or Ctrl-C."""
    import signal

    import trio

    from p2psched.api.control import serve_api
    from p2psched.wire.address import host_port

    with trio.open_signal_receiver(signal.SIGTERM) as terminate:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve_api(
                    node,
                    host=api[0],
                    port=api[1],
                    tls=api[2],
                    sessions=api[3],
                    server=api[4],
                    task_status=task_status,
                )
            )
            host, port = node.dht.address
            print(headline.format(id=node.node_id.hex(), dht=host_port(host, port), port=port))
            print(f"  control API {url} (token in {node.data_dir / TOKEN_FILE})", flush=True)
            async for _ in terminate:
                nursery.cancel_scope.cancel()
                return


async def serve_worker(
    args: argparse.Namespace, node: Node, config: WorkerConfig, api: ApiListen
) -> None:
    """Say what the worker that joined found and advertises, then serve as `serve_node` does;
    its ad is withdrawn as the node closes."""
    try:
        _describe_worker(args, node, config)
        await serve_node(node, "  DHT on {dht}; Ctrl-C to leave (the ad is withdrawn)", api)
    finally:
        print("ad withdrawn", flush=True)


def _describe_worker(args: argparse.Namespace, node: Node, config: WorkerConfig) -> None:
    """What a worker that joined found on this machine, what it advertises, and where."""
    worker = node.worker
    assert worker is not None
    detected, profile = worker.detected, worker.advert.profile
    print(f"worker {worker.service.identity.node_id.hex()} joined through {', '.join(args.gate)}")
    print(f"  reachability: {worker.reachability} ({worker.why})")
    if worker.relay is not None:
        print("  schedulers reach it through its gate's relay; it accepts no inbound connection")
    print(
        f"  detected: {detected.cpu_model}, {detected.cpu_cores} cores, "
        f"{detected.ram_gb:g} GiB RAM, {detected.disk_gb:g} GiB free disk; "
        f"GPUs: {_gpus(detected.gpus)}"
    )
    for note in detected.notes:
        print(f"  note: {note}")
    if config.override:
        print(f"  overridden by {args.config}: {', '.join(sorted(config.override))}")
    print(
        f"  advertised: GPUs {_gpus(profile.gpus)}; {profile.cpu_cores} cores, "
        f"{profile.ram_gb:g} GiB RAM; "
        f"models {', '.join(profile.installed_models) or 'none'}; "
        f"drivers {', '.join(profile.drivers)}; {profile.free_slots} slot(s) "
        f"at {profile.min_price:g} or more per task"
    )
    places = ", ".join(worker.advert.capabilities)
    print(f"  ad (TTL {args.ad_ttl:g}s) under {places}; tasks on {worker.address}")


def _gpus(found: tuple[Gpu, ...]) -> str:
    return ", ".join(f"{g.model} ({g.vram_gb:g} GiB)" for g in found) or "none"
