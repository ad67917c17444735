"""Flood benchmark: honest lookups through a real `p2psched dht serve` node, before and during a
flood of forged first contacts from one /24 (127.0.9.0/24 on loopback: Linux lets a socket bind
any address of 127/8), and the amplification factor towards a spoofed, unproven address.

The target runs in its own process, the flood in another; an honest swarm of `--swarm` nodes and
a client that joins through the target run here. Each lookup is a `find_node` of a random id.

    python bench/flood.py [--forged 50000] [--rate 20000] [--lookups 100]

Ends with:
flood honest_lookup_ratio=<median during / median before> amplification=<bytes out / bytes in>
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2psched.dht.node import DhtNode, open_dht_node  # noqa: E402
from p2psched.dht.routing import Contact  # noqa: E402
from p2psched.identity import Identity  # noqa: E402
from tests.harness.flood import attack_requests, dht_serve, honest_swarm  # noqa: E402

FLOODER = "import sys; from tests.harness.flood import flood; flood(({!r}, {}), {}, {})"


async def lookup_times(client: DhtNode, count: int, until: trio.Event | None = None) -> list[float]:
    """Seconds each of up to `count` lookups took (stopping early once `until` is set)."""
    times = []
    for _ in range(count):
        start = trio.current_time()
        await client.find_node(os.urandom(32))
        times.append(trio.current_time() - start)
        if until is not None and until.is_set():
            break
    return times


async def amplification(target: tuple[str, int], contact: Contact) -> tuple[int, int]:
    """(bytes sent from a spoofed 127.0.9.7, bytes the target sent back there)."""
    victim = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await victim.bind(("127.0.9.7", 0))
    sent = received = 0
    for data in attack_requests(contact, time.time()):
        sent += await victim.sendto(data, target)
    with trio.move_on_after(2):
        while True:
            received += len(await victim.recv(65536))
    victim.close()
    return sent, received


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, dht_serve(Path(tmp) / "target") as target:
        async with (
            honest_swarm(target, args.swarm) as (_, contact),
            open_dht_node(Identity.generate()) as client,
        ):
            await client.bootstrap([target])
            before = await lookup_times(client, args.lookups)
            code = FLOODER.format(target[0], target[1], args.forged, args.rate)
            flooder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
            done = trio.Event()
            flood_started = time.monotonic()

            async def wait_flood() -> None:
                await trio.to_thread.run_sync(flooder.wait)
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_flood)
                during = await lookup_times(client, 100_000, until=done)
            flood_seconds = time.monotonic() - flood_started
            sent, received = await amplification(target, contact)
    ratio = statistics.median(during) / statistics.median(before)
    print(f"{'phase':<14}{'lookups':>9}{'p50 ms':>10}{'p90 ms':>10}")
    for name, xs in (("before flood", before), ("during flood", during)):
        q = statistics.quantiles(xs, n=10) if len(xs) > 1 else [xs[0]] * 9
        print(f"{name:<14}{len(xs):>9}{statistics.median(xs) * 1e3:>10.2f}{q[8] * 1e3:>10.2f}")
    print(f"flood: {args.forged} forged first contacts from 127.0.9.0/24 in {flood_seconds:.1f} s")
    print(f"spoofed 127.0.9.7: sent {sent} bytes, got back {received}")
    print(f"flood honest_lookup_ratio={ratio:.2f} amplification={received / sent:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forged", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=20_000, help="forged datagrams a second")
    parser.add_argument("--lookups", type=int, default=100)
    parser.add_argument("--swarm", type=int, default=20)
    trio.run(main, parser.parse_args())
