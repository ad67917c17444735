"""Discovery benchmark: 1,000 simulated worker ads in a 200-node DHT swarm on 127.0.0.1.

Each ad is a profile signed by its own worker identity, stored under its capability keys. Then
nodes of the swarm answer a selective need (10 matches: one model served by ten workers) and a
broad one (500 matches: half the workers), cold (fresh reads) and warm (from the cache), and a
scan-all search (every ad read through the `any` capability and filtered, as a network without
capability keys would) is measured in the same run for comparison. Every answer is checked
against the ground truth.

    python bench/discovery.py [--ads 1000] [--nodes 200] [--queries 50]

Ends with:
discovery N=<ads> selective_p50_ms=<x> broad_p50_ms=<y> warm_p50_ms=<z> exact=<true|false>
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

# Ids at test difficulty (here and in the processes this starts): what is measured is the DHT,
# not the second of work each identity of a real network costs.
os.environ.setdefault("P2PSCHED_ID_BITS", "4")

import trio

from p2psched.dht.records import Record
from p2psched.dht.swarm import open_swarm
from p2psched.identity import Identity
from p2psched.resources.need import Need, capability_keys
from p2psched.resources.profile import Gpu, Profile
from p2psched.scheduler.discovery import Discovery


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def make_profiles(n: int, rng: random.Random) -> list[tuple[Identity, Profile]]:
    out = []
    for i in range(n):
        gpu = (
            Gpu("NVIDIA A100-SXM4-40GB", 40.0)
            if i % 3 == 0
            else Gpu("NVIDIA GeForce RTX 4090", 24.0)
        )
        out.append(
            (
                Identity.generate(),
                Profile(
                    cpu_model="bench CPU",
                    cpu_cores=16,
                    ram_gb=64.0 if i % 2 else 32.0,  # half of them: the broad need
                    gpus=(gpu,),
                    installed_models=(f"model-{i % (n // 10)}",),  # each model on 10 workers
                    drivers=("http",),
                    free_slots=1,
                    min_price=rng.choice([0.01, 0.02]),
                ),
            )
        )
    return out


async def main(ads: int, nodes: int, queries: int, seed: int) -> None:
    rng = random.Random(seed)
    workers = make_profiles(ads, rng)
    t0 = time.perf_counter()
    async with open_swarm(nodes) as swarm:
        setup = time.perf_counter() - t0
        members = [m.node for m in swarm]
        now = members[0].now()
        records = [
            Record.create(ident, key, profile.encode(), seq=1, expires_ms=int((now + 3600) * 1000))
            for ident, profile in workers
            for key in capability_keys(profile, ident.node_id).values()
        ]
        limiter = trio.CapacityLimiter(32)
        t0 = time.perf_counter()

        async def store(record: Record) -> None:
            async with limiter:
                await rng.choice(members).replicate(record)

        async with trio.open_nursery() as nursery:
            for record in records:
                nursery.start_soon(store, record)
        stored = time.perf_counter() - t0

        selective = [Need.parse(f"model=model-{rng.randrange(ads // 10)}") for _ in range(queries)]
        broad = Need.parse("ram>=64")
        truth = {
            str(need): sorted(ident.node_id for ident, p in workers if need.matches(p))
            for need in [*selective, broad]
        }
        exact = True
        times: dict[str, list[float]] = {"selective": [], "broad": [], "warm": [], "scan_all": []}

        async def timed(name: str, discovery: Discovery, need: Need, fresh: bool) -> None:
            nonlocal exact
            t = time.perf_counter()
            found = await discovery.find(need, fresh=fresh)
            times[name].append(time.perf_counter() - t)
            exact &= [a.node_id for a in found] == truth[str(need)]

        for need in selective:
            discovery = Discovery(rng.choice(members))
            await timed("selective", discovery, need, True)
            await timed("warm", discovery, need, False)
        for _ in range(max(5, queries // 5)):
            await timed("broad", Discovery(rng.choice(members)), broad, True)
        for need in selective[: max(5, queries // 5)]:
            # Without capability keys: read every ad, filter here.
            discovery = Discovery(rng.choice(members))
            t = time.perf_counter()
            everyone = await discovery.find(Need(), fresh=True)
            found = [a.node_id for a in everyone if need.matches(a.profile)]
            times["scan_all"].append(time.perf_counter() - t)
            exact &= found == truth[str(need)]

    print(
        f"Discovery benchmark: {ads} worker ads ({len(records)} records) in a {nodes}-node swarm "
        f"on 127.0.0.1; swarm set-up {setup:.1f} s, ads stored in {stored:.1f} s"
    )
    print(f"{'query':34}{'runs':>6}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [
        ("selective, cold (10 matches)", "selective"),
        ("selective, warm cache", "warm"),
        ("broad, cold (500 matches)", "broad"),
        ("scan-all peer (selective need)", "scan_all"),
    ]
    for label, name in rows:
        xs = [x * 1e3 for x in times[name]]
        print(f"{label:34}{len(xs):>6}{statistics.median(xs):>10.3f}{pct(xs, 0.99):>10.3f}")
    print(
        f"discovery N={ads} selective_p50_ms={statistics.median(times['selective']) * 1e3:.2f} "
        f"broad_p50_ms={statistics.median(times['broad']) * 1e3:.2f} "
        f"warm_p50_ms={statistics.median(times['warm']) * 1e3:.3f} exact={str(exact).lower()}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ads", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    trio.run(main, a.ads, a.nodes, a.queries, a.seed)
