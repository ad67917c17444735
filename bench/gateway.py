"""The OpenAI-compatible gateway: chat completions through a node's gateway against the same
requests sent straight to the model server, same run, plain and streamed.

A devnet (gate + 2 workers, 8 slots each, the http driver only) on loopback, whose workers'
http driver points at the devnet's test model server; the gateway is the gate's node (its
control API's TCP address, the token as the API key). Each request is a one-task job there:
discovery in the DHT, quotes, a commitment, dispatch over a Noise channel, the worker's post
to the model server, and its receipt. The client is httpx, the same for both.

    python bench/gateway.py [--requests 200] [--concurrency 16]

Latency: `--requests` requests one at a time (the first few of each kind left out, as warm-up);
a streamed request's time to first token is until the first chunk with content arrives.
Throughput: `--requests` requests `--concurrency` at a time. Ends with: gateway
ttft_overhead_ms=<p50 time to first token through the gateway minus straight, streamed>
rps_ratio=<plain requests per second through the gateway / straight>
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from p2psched import devnet

WORKERS, SLOTS = 2, 8
WARM_UP = 5
MODEL = "llama-3-8b"  # the first devnet worker's
ASK = [{"role": "user", "content": "tell me about scheduling work on other people's GPUs"}]


async def one(client: httpx.AsyncClient, url: str, stream: bool) -> tuple[float, float]:
    """Seconds to the first content (the whole answer, plain) and to the end."""
    body = {"model": MODEL, "messages": ASK, "stream": stream}
    t0 = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        if not stream:
            doc = json.loads(await response.aread())
            assert doc["choices"][0]["message"]["content"].startswith("echo:")
        else:
            async for line in response.aiter_lines():
                if first is None and line.startswith("data: {") and '"content":"' in line:
                    if '"content":""' not in line:
                        first = time.perf_counter() - t0
    end = time.perf_counter() - t0
    return first if first is not None else end, end


async def latencies(client: httpx.AsyncClient, url: str, stream: bool, n: int) -> list[float]:
    firsts = []
    for _ in range(n + WARM_UP):
        firsts.append((await one(client, url, stream))[0])
    return firsts[WARM_UP:]


async def throughput(
    client: httpx.AsyncClient, url: str, stream: bool, n: int, concurrency: int
) -> float:
    """Requests a second, `n` of them `concurrency` at a time."""
    left = iter(range(n))

    async def loop() -> None:
        for _ in left:
            await one(client, url, stream)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(loop)
    return n / (time.perf_counter() - t0)


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1]


async def measure(
    routes: dict[str, tuple[str, dict[str, str]]], n: int, concurrency: int
) -> dict[tuple[str, bool], dict[str, Any]]:
    out: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, (url, headers) in routes.items():
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
            for stream in (False, True):
                firsts = await latencies(client, url, stream, n)
                rps = await throughput(client, url, stream, n, concurrency)
                out[(name, stream)] = {"firsts": firsts, "rps": rps}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        folder = Path(tmp)
        devnet.up(folder, WORKERS, drivers=["http"], slots=SLOTS, price=0.0)
        try:
            port = json.loads((folder / f"{devnet.MODEL_SERVER}.json").read_text())["port"]
            gate = folder / "gate"
            api = json.loads((gate / "api.json").read_text())["url"]
            token = (gate / "api.token").read_text().strip()
            routes = {
                "straight": (f"http://127.0.0.1:{port}/v1/chat/completions", {}),
                "gateway": (
                    f"{api}/v1/chat/completions",
                    {"authorization": f"Bearer {token}"},
                ),
            }
            results = trio.run(measure, routes, args.requests, args.concurrency)
        finally:
            devnet.down(folder)

    print(
        f"{WORKERS} workers x {SLOTS} slots, http driver -> the devnet's test model server; "
        f"{args.requests} requests each way, throughput at concurrency {args.concurrency}"
    )
    print(f"{'route':<9} {'kind':<7} {'first ms p50':>13} {'p90':>7} {'requests/s':>11}")
    for (name, stream), r in results.items():
        kind = "stream" if stream else "plain"
        firsts = [x * 1000 for x in r["firsts"]]
        print(f"{name:<9} {kind:<7} {p50(firsts):>13.2f} {p90(firsts):>7.2f} {r['rps']:>11.1f}")
    print("(first: the whole answer for plain requests; the first token for streamed ones)")
    ttft = p50(results[("gateway", True)]["firsts"]) - p50(results[("straight", True)]["firsts"])
    ratio = results[("gateway", False)]["rps"] / results[("straight", False)]["rps"]
    stream_ratio = results[("gateway", True)]["rps"] / results[("straight", True)]["rps"]
    print(f"streamed rps_ratio={stream_ratio:.3f}")
    print(f"gateway ttft_overhead_ms={ttft * 1000:.2f} rps_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
