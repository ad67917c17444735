"""What strangers' attacks cost an honest job: a gate and four workers serve the same job quiet,
then while attackers run the attacks of issue 14's sections 2 and 5 together, in one run.

Processes, all on loopback, each its own: a gate (`p2psched gate`, default limits), four
workers joined through it (`p2psched worker join`, started as `bench/relay.py` starts them):
two dialed directly and two behind the relay (they listen nowhere: every byte to them crosses
the gate), and a scheduler node (`p2psched node`). The honest job: N sleep tasks of S seconds,
submitted to that node through its control API as `p2psched submit` does, after a small
warm-up job. It runs once quiet, then once more while four attacker processes (this script,
one per kind of attack) run, from 2 s before it is submitted until it is done:

- bombs: one 16 MiB frame of empty maps (an array header, then 0x80 bytes) on the gate's
  control channel, on each direct worker's listener, and through a circuit to each relayed
  worker; 2 at a time per target (from 127.0.0.30-31), each again 0.5 s after it ended;
- idle: 16 source addresses (127.0.0.10-25) × 16 sockets that say nothing, at the gate and at
  each direct worker, each opened again 1 s after the target closed it;
- handshakes: whole Noise handshakes (on a control channel, at the gate), closed at once and
  begun again, 4 at a time per target (from 127.0.0.40-43);
- greedy: a relay peer holds a reservation as a worker (from 127.0.0.60) and opens 16
  circuits to itself as a scheduler (from 127.0.0.61), then pushes bytes through them as fast
  as the gate lets it (raw bytes: the gate forwards a circuit's bytes unread).

A node's peak memory growth: its VmHWM (/proc/PID/status) when the job is done less its VmHWM
before the run began (before the attackers started). Makespan: from submission until every
task is final, by the scheduler node's clock. The attackers run at nice 10 (`--nice`): on a
real network they would spend their own machines' CPU, here they share two cores with the
nodes, and what they make the nodes spend is what this measures.

    python bench/attack.py [--tasks 1500] [--seconds 0.05] [--quick] [--nice 10]

Ends with: attack honest_makespan_ratio=<under attack / quiet> peak_rss_growth_mb=<largest
growth of any node under attack> (goals: ratio <= 1.5, growth <= 64)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
from relay import EXE, Network, Proc, network

from p2psched.api.client import ControlClient
from p2psched.gate.client import open_worker_channel
from p2psched.identity import Identity
from p2psched.wire.address import split_host_port
from p2psched.wire.channel import SecureChannel, secure_stream
from p2psched.wire.hop import HopError, connect_request
from p2psched.wire.hop_stream import read_frame, write_frame
from p2psched.wire.noise import ChannelError

WORKERS = {  # label -> (reachability, slots, queue)
    "direct-1": ("public", 2, 2),
    "direct-2": ("public", 2, 2),
    "relayed-1": ("private", 2, 2),
    "relayed-2": ("private", 2, 2),
}
NODES = ["gate", *WORKERS, "scheduler"]
JOB_LIMIT_S = 90.0  # an attacked job not done by then is cancelled, and says how far it got

BOMB = 16 << 20  # the largest frame any channel takes
BOMBERS = 2  # per target
BOMB_PAUSE_S = 0.5
IDLE_ADDRESSES = [f"127.0.0.{10 + i}" for i in range(16)]
IDLE_PER_ADDRESS = 16
IDLE_REOPEN_S = 1.0
HANDSHAKERS = 4  # per target
GREEDY_CIRCUITS = 16  # a peer's limit on a gate by default
PUSH = b"\0" * (1 << 18)
ATTACKER = [sys.executable, __file__]
KINDS = ["bombs", "idle", "handshakes", "greedy"]  # an attacker process each
HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
Addr = tuple[str, int]


# -- the attacker (a process of its own) ------------------------------------------------------


@dataclass
class Targets:
    gate: str
    direct: list[str]  # HOST:PORT
    relayed: list[str]  # HOST:PORT/relay/<id>


class Attacker:
    """One kind of attack (`KINDS`), in as many loops as it takes, until cancelled; `counts`
    says what it did and how the targets answered."""

    def __init__(self, targets: Targets) -> None:
        self.gate = split_host_port(targets.gate)
        self.direct = [split_host_port(a) for a in targets.direct]
        self.relayed = targets.relayed
        self.counts: Counter[str] = Counter()
        self.me = Identity.generate()  # ids cost work: one serves every connection

    async def run(self, kind: str) -> None:
        async with trio.open_nursery() as nursery:
            if kind == "bombs":
                n = BOMB - 64
                bomb = b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
                for src in [f"127.0.0.{30 + i}" for i in range(BOMBERS)]:
                    nursery.start_soon(self._again, "bomb gate", self._bomb_gate, bomb, src)
                    for a in self.direct:
                        nursery.start_soon(
                            self._again, "bomb direct", self._bomb_direct, bomb, a, src
                        )
                    for r in self.relayed:
                        nursery.start_soon(
                            self._again, "bomb relayed", self._bomb_relayed, bomb, r, src
                        )
            elif kind == "idle":
                for target in [self.gate, *self.direct]:
                    for src in IDLE_ADDRESSES:
                        for _ in range(IDLE_PER_ADDRESS):
                            nursery.start_soon(self._idle, target, src)
            elif kind == "handshakes":
                for src in [f"127.0.0.{40 + i}" for i in range(HANDSHAKERS)]:
                    nursery.start_soon(self._again, "handshake gate", self._handshake_gate, src)
                    for a in self.direct:
                        nursery.start_soon(
                            self._again, "handshake direct", self._handshake_direct, a, src
                        )
            else:
                nursery.start_soon(self._greedy, nursery)

    async def _again(self, name: str, attack: Callable[..., Awaitable[str]], *args: Any) -> None:
        """`attack` over and over, counting how each ended: as it says, or cut off."""
        pause = {"bomb": BOMB_PAUSE_S, "greedy": 1.0}.get(name.split()[0], 0.0)
        while True:
            try:
                self.counts[f"{name}: {await attack(*args)}"] += 1
            except (ChannelError, HopError, OSError, trio.BrokenResourceError) as e:
                self.counts[f"{name}: cut off ({type(e).__name__})"] += 1
            await trio.sleep(pause)

    @asynccontextmanager
    async def _control(self, source: str, max_frame: int) -> AsyncIterator[SecureChannel]:
        """A control channel to the gate, from `source`, taking frames up to `max_frame`."""
        stream = await trio.open_tcp_stream(*self.gate, local_address=source)
        hello = await read_frame(stream, "hello")
        await write_frame(stream, {"t": "control"})
        await read_frame(stream, "ok")
        async with secure_stream(
            stream, self.me, initiator=True, expected_peer=hello["gate"], max_frame=max_frame
        ) as channel:
            yield channel

    async def _send_bomb(self, channel: SecureChannel, bomb: bytes) -> str:
        await channel.send_encoded([bomb])
        with trio.move_on_after(10):
            await channel.receive()  # the target's answer, or its hang-up (raises)
            return "sent, answered"
        return "sent, no answer in 10 s"

    async def _bomb_gate(self, bomb: bytes, source: str) -> str:
        async with self._control(source, BOMB) as channel:
            return await self._send_bomb(channel, bomb)

    async def _bomb_direct(self, bomb: bytes, target: Addr, source: str) -> str:
        stream = await trio.open_tcp_stream(*target, local_address=source)
        async with secure_stream(stream, self.me, initiator=True, max_frame=BOMB) as channel:
            return await self._send_bomb(channel, bomb)

    async def _bomb_relayed(self, bomb: bytes, address: str, source: str) -> str:
        worker = bytes.fromhex(address.rsplit("/", 1)[1])
        async with open_worker_channel(
            address, self.me, expected_peer=worker, local_address=source
        ) as channel:
            return await self._send_bomb(channel, bomb)

    async def _handshake_gate(self, source: str) -> str:
        async with self._control(source, 4096):
            return "done"

    async def _handshake_direct(self, target: Addr, source: str) -> str:
        stream = await trio.open_tcp_stream(*target, local_address=source)
        async with secure_stream(stream, self.me, initiator=True):
            return "done"

    async def _idle(self, target: Addr, source: str) -> None:
        """A socket that says nothing, opened again a while after the target closes it."""
        while True:
            try:
                stream = await trio.open_tcp_stream(*target, local_address=source)
                self.counts["idle sockets opened"] += 1
                async with stream:
                    while await stream.receive_some(1 << 16):
                        pass  # (the gate's hello)
            except OSError:
                self.counts["idle sockets refused"] += 1
            await trio.sleep(IDLE_REOPEN_S)

    async def _greedy(self, nursery: trio.Nursery) -> None:
        """A reservation as a worker, circuits to it as a scheduler, bytes pushed through."""
        sender = Identity.generate()
        for _ in range(GREEDY_CIRCUITS):
            nursery.start_soon(self._greedy_push, sender)
        await self._again("greedy reservation", self._greedy_reserve, nursery)

    async def _greedy_reserve(self, nursery: trio.Nursery) -> str:
        async with self._control("127.0.0.60", 4096) as control:
            await control.send({"t": "reserve"})
            while True:
                with trio.move_on_after(30):  # a refresh within the reservation's TTL
                    message = await control.receive()
                    if message["t"] == "incoming":
                        nursery.start_soon(self._greedy_take, message["token"])
                    continue
                await control.send({"t": "reserve"})

    async def _greedy_take(self, token: bytes) -> None:
        try:
            stream = await trio.open_tcp_stream(*self.gate, local_address="127.0.0.60")
            async with stream:
                await read_frame(stream, "hello")
                await write_frame(stream, {"t": "accept", "token": token})
                await read_frame(stream, "ok")
                while data := await stream.receive_some(1 << 18):
                    self.counts["greedy bytes relayed"] += len(data)
        except (HopError, OSError, trio.BrokenResourceError):
            self.counts["greedy circuits ended"] += 1

    async def _greedy_push(self, sender: Identity) -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream(*self.gate, local_address="127.0.0.61")
                async with stream:
                    hello = await read_frame(stream, "hello")
                    await write_frame(stream, connect_request(sender, hello, self.me.node_id))
                    await read_frame(stream, "ok")
                    self.counts["greedy circuits opened"] += 1
                    while True:
                        await stream.send_all(PUSH)
            except (HopError, OSError, trio.BrokenResourceError) as e:
                self.counts[f"greedy circuit refused or broken ({type(e).__name__})"] += 1
            await trio.sleep(1.0)


def attacker_main(kind: str, targets: Targets, nice: int) -> None:
    """An attacker process: runs its kind of attack until SIGTERM, then prints its counts."""
    os.nice(nice)
    resource.setrlimit(resource.RLIMIT_NOFILE, (HARD_NOFILE, HARD_NOFILE))
    attacker = Attacker(targets)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(attacker.run, kind)
                print("attacking", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    began = time.monotonic()
    trio.run(main)
    out: dict[str, float] = dict(attacker.counts)
    if kind == "greedy":
        out["greedy MB/s relayed, mean"] = round(
            out.get("greedy bytes relayed", 0) / 1e6 / (time.monotonic() - began), 1
        )
    print(json.dumps(out), flush=True)


# -- the honest side, and the measures -----------------------------------------------------------


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@dataclass
class Outcome:
    makespan: float
    done: int
    total: int
    on_relayed: int  # tasks completed on the workers behind the relay
    growth: dict[str, float]  # node -> VmHWM growth, MB
    relayed_mb: float  # through the gate during the run, all circuits


def sleep_job(name: str, tasks: int, seconds: float) -> dict[str, Any]:
    return {
        "name": name,
        "driver": "sleep",
        "template": {"input": {"seconds": seconds}},
        "matrix": {"i": list(range(tasks))},
        "timeout": "60s",
    }


def run_job(client: ControlClient, doc: dict[str, Any]) -> dict[str, Any]:
    """Submit the job and wait until it is done (or cancel it at `JOB_LIMIT_S`): its status,
    with its tasks."""
    job = quote(client.post("/v1/jobs", {"spec": doc, "source": "bench/attack.py"})["job"])
    deadline = time.monotonic() + JOB_LIMIT_S
    while (status := client.get(f"/v1/jobs/{job}"))["state"] == "running":
        if time.monotonic() > deadline:
            client.post(f"/v1/jobs/{job}/cancel", {"tasks": None})
            deadline = float("inf")
        time.sleep(0.2)
    status["tasks"] = client.get(f"/v1/jobs/{job}/tasks")["tasks"]
    return dict(status)


def measured(
    net: Network,
    client: ControlClient,
    gate: ControlClient,
    doc: Any,
    first: Callable[[], None] = lambda: None,
) -> Outcome:
    """Run `first` (the attackers' start), then the job; what each node grew by from before
    `first` until the job was done."""
    pids = {node: net.procs[node].popen.pid for node in NODES}
    before = {node: peak_mb(pid) for node, pid in pids.items()}
    relayed_before = gate.get("/v1/gate")["counters"].get("bytes_relayed", 0)
    first()
    status = run_job(client, doc)
    growth = {node: peak_mb(pid) - before[node] for node, pid in pids.items()}
    relayed = gate.get("/v1/gate")["counters"].get("bytes_relayed", 0) - relayed_before
    relayed_ids = {a.rsplit("/", 1)[1] for a in net.tasks_on.values() if "/relay/" in a}
    on_relayed = sum(
        1 for t in status["tasks"] if t["state"] == "completed" and t["worker"] in relayed_ids
    )
    return Outcome(
        status["elapsed_s"],
        status["completed"],
        status["total"],
        on_relayed,
        growth,
        relayed / 1e6,
    )


def commit() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        " (with changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    )


def bench(folder: Path, tasks: int, seconds: float, nice: int) -> None:
    with network(folder, WORKERS, drivers=("sleep",), relay="") as net:
        node = Proc(
            [*EXE, "node", "--gate", net.gate, "--data-dir", str(folder / "scheduler")],
            folder / "scheduler.log",
        )
        net.procs["scheduler"] = node
        node.wait_for(r"control API")
        client, gate = ControlClient.find(folder / "scheduler"), ControlClient.find(folder / "gate")
        assert client is not None and gate is not None
        print(
            f"commit {commit()}; gate {net.gate}; 4 workers (2 behind the relay); "
            f"{tasks} tasks of {seconds:g} s; 2 slots per worker",
            flush=True,
        )
        run_job(client, sleep_job("warm-up", 16, seconds))
        quiet = measured(net, client, gate, sleep_job("honest", tasks, seconds))
        print(f"  quiet: {quiet.makespan:.2f} s", flush=True)
        attackers: list[Proc] = []
        start = functools.partial(start_attackers, folder, net, nice, attackers)
        attacked = measured(net, client, gate, sleep_job("honest", tasks, seconds), start)
        counts = stop_attackers(attackers)
        client.close()
        gate.close()
    report(quiet, attacked, counts)


def start_attackers(folder: Path, net: Network, nice: int, started: list[Proc]) -> None:
    """An attacker process per kind of attack, each at `net`'s nodes; then 2 s for the
    floods to build up before the honest job comes."""
    relayed = [a for a in net.tasks_on.values() if "/relay/" in a]
    direct = [a for a in net.tasks_on.values() if a not in relayed]
    targets = json.dumps(Targets(net.gate, direct, relayed).__dict__)
    for kind in KINDS:
        argv = [*ATTACKER, kind, "--nice", str(nice), "--targets", targets]
        started.append(attacker := Proc(argv, folder / f"attack-{kind}.log"))
        net.procs[f"attack-{kind}"] = attacker  # (stopped with the network, whatever happens)
    for attacker in started:
        attacker.wait_for("attacking")
    time.sleep(2.0)


def stop_attackers(attackers: list[Proc]) -> dict[str, float]:
    """Stop them: what they did, all together."""
    counts: dict[str, float] = {}
    for a in attackers:
        a.stop()
        said = a.log.read_text().strip().splitlines()
        if not said or not said[-1].startswith("{"):
            raise RuntimeError(f"{a.log.name} ends without its counts:\n" + "\n".join(said[-30:]))
        counts.update(json.loads(said[-1]))
    return counts


def report(quiet: Outcome, attacked: Outcome, counts: dict[str, float]) -> None:
    print()
    print("attackers, from 2 s before the attacked job until it was done:")
    for name, n in sorted(counts.items()):
        print(f"  {name:<48} {n:>12,}")
    print()
    print(f"{'':<13} {'':>10} {'tasks':>11} {'on':>8} {'MB via':>8}   peak RSS (VmHWM) growth, MB")
    head = f"{'run':<13} {'makespan s':>10} {'done':>11} {'relayed':>8} {'the gate':>8}"
    print(head + "".join(f" {node:>10}" for node in NODES))
    for name, o in (("quiet", quiet), ("under attack", attacked)):
        print(
            f"{name:<13} {o.makespan:>10.2f} {f'{o.done}/{o.total}':>11} {o.on_relayed:>8} "
            f"{o.relayed_mb:>8.1f}" + "".join(f" {o.growth[node]:>10.1f}" for node in NODES)
        )
    print()
    ratio = attacked.makespan / quiet.makespan
    growth = max(attacked.growth.values())
    print(f"attack honest_makespan_ratio={ratio:.3f} peak_rss_growth_mb={growth:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=0.05, help="each task's sleep")
    parser.add_argument("--quick", action="store_true", help="300 tasks")
    parser.add_argument("--nice", type=int, default=10, help="the attackers' niceness")
    parser.add_argument("attacker", nargs="?", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)  # (for an attacker)
    args = parser.parse_args()
    if args.attacker:
        attacker_main(args.attacker, Targets(**json.loads(args.targets)), args.nice)
        return
    with tempfile.TemporaryDirectory(prefix="bench-attack-") as tmp:
        bench(Path(tmp), 300 if args.quick else args.tasks, args.seconds, args.nice)


if __name__ == "__main__":
    main()
