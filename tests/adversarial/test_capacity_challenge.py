"""Capacity challenges over real channels on loopback: a scheduler's node (its `Dispatcher`)
challenges a real worker (`WorkerService`), which passes, refuses while busy and when asked
again too soon; hostile workers, one that computes only some rows and one that answers with
rows larger than any product has, are caught and dropped with the reason; jobs that ask for a
worker's challenge share one. Then as a user runs it: `p2psched challenge` against a worker
process, a job with `verify: {challenge: true}`, and both ledgers."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
import trio

from p2psched.gate.client import open_worker_channel
from p2psched.identity import Identity
from p2psched.resources.challenge import ROWS, Matrices, MerkleTree, row_bytes, worker_seed
from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.ads import WorkerAd
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import JobRun, task_id_for
from p2psched.scheduler.service import Dispatcher
from p2psched.wire.channel import SecureChannel, serve_channels
from p2psched.wire.deal import Receipt
from p2psched.wire.messages import (
    ChallengeAsk,
    ChallengeOpen,
    ChallengeRoot,
    ChallengeRows,
    encode,
    parse,
)
from p2psched.worker.challenge import ChallengeDesk
from p2psched.worker.drivers import EchoDriver, SleepDriver
from p2psched.worker.manager import TaskManager
from p2psched.worker.service import WorkerService
from tests.harness.net import spec
from tests.harness.processes import gate_and_worker, p2psched, running_node, submit_json, write_job

Handle = Callable[[SecureChannel, Identity], Awaitable[None]]


def profile_at(address: tuple[str, int]) -> Profile:
    """What the worker's ad claims: one CPU core, no GPU, and where it is."""
    return Profile(
        cpu_model="cpu",
        cpu_cores=1,
        ram_gb=8.0,
        min_price=0.5,
        drivers=("echo", "sleep"),
        free_slots=1,
        addresses=(f"{address[0]}:{address[1]}",),
    )


async def dispatcher_for(
    nursery: trio.Nursery, worker: Identity, address: tuple[str, int]
) -> Dispatcher:
    ad = WorkerAd(worker.node_id, profile_at(address), seq=1, expires=1e12)

    async def find(need: Need) -> list[WorkerAd]:
        return [ad]

    dispatcher = Dispatcher(Identity.generate(), find, open_worker_channel)
    await nursery.start(dispatcher.serve)
    dispatcher.saw([ad])
    return dispatcher


@asynccontextmanager
async def honest_worker() -> AsyncIterator[tuple[Dispatcher, Identity]]:
    worker = Identity.generate()
    manager = TaskManager(worker, slots=1, price=0.5)
    desk = ChallengeDesk(worker, price=0.5, interval_s=3600.0)
    drivers = {"echo": EchoDriver(), "sleep": SleepDriver()}
    service = WorkerService(worker, manager, drivers, challenges=desk)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(service.serve)
        yield await dispatcher_for(nursery, worker, address), worker
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def hostile_worker(handle: Handle) -> AsyncIterator[tuple[Dispatcher, Identity]]:
    worker = Identity.generate()

    async def serve(channel: SecureChannel) -> None:
        await handle(channel, worker)

    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_channels, worker, serve)
        yield await dispatcher_for(nursery, worker, address), worker
        nursery.cancel_scope.cancel()


async def test_an_honest_worker_passes_then_refuses_a_second_challenge_too_soon() -> None:
    async with honest_worker() as (dispatcher, worker):
        with trio.fail_after(30):
            v = await dispatcher.challenge(worker.node_id, n=128, rows=8)
        assert v.passed and not v.refused and v.reason is None, v
        assert v.measured_s is not None and v.measured_s <= v.limit_s
        assert dispatcher.views.capacity(worker.node_id) == "passed"
        with trio.fail_after(30):
            again = await dispatcher.challenge(worker.node_id, n=128)
        assert again.refused and not again.passed
        assert "one capacity challenge per 3600 s" in str(again.reason)
        assert dispatcher.views.capacity(worker.node_id) == "passed"  # a refusal says nothing
        # A product its one core would take over a minute for is not asked while one waits.
        with pytest.raises(
            ValueError, match=r"up to 35 s for the product, over the 15 s .*: ask for a smaller n"
        ):
            await dispatcher.challenge(worker.node_id, n=4096, most_s=15.0)


async def test_a_worker_running_a_task_refuses_to_be_challenged() -> None:
    async with honest_worker() as (dispatcher, worker):
        task = replace(spec(0, driver="sleep"), task_id=task_id_for("job", 0))
        task = replace(task, input={"seconds": 60})
        run = JobRun(
            dispatcher.identity, "job", [task], mtr=0, now=dispatcher.clock(), rids=dispatcher.rids
        )
        dispatcher.add(run)
        with trio.fail_after(30):
            while run.tasks[task.task_id].state != TaskState.RUNNING:
                await trio.sleep(0.01)
            v = await dispatcher.challenge(worker.node_id, n=64)
        assert v.refused and not v.passed and "busy: 1 tasks held here" in str(v.reason), v
        assert dispatcher.views.capacity(worker.node_id) == "unknown"
        dispatcher.cancel("job", None)


async def test_a_worker_that_computes_only_some_rows_is_caught_over_a_real_channel() -> None:
    async def a_tenth_of_the_rows(channel: SecureChannel, me: Identity) -> None:
        kept: list[bytes] = []
        while True:
            m = parse(await channel.receive_frame())
            if isinstance(m, ChallengeAsk):
                matrices = Matrices(worker_seed(m.seed, me.node_id), m.n, m.rounds)
                rows = [row_bytes(r) for j in range(m.rounds) for r in matrices.a(j) @ matrices.b]
                kept = [r if i % 10 == 0 else bytes(len(r)) for i, r in enumerate(rows)]
                root = ROWS.tree_of(kept).root
                await channel.send_encoded([encode(ChallengeRoot(m.rid, root, 0.01))])
                ask = m
            elif isinstance(m, ChallengeOpen):
                tree = ROWS.tree_of(kept)
                c = ask.commitment
                receipt = Receipt(
                    me.node_id, c.scheduler, c.job, c.tasks[0], True, tree.root, 0.01, c.price, 1.0
                ).signed(me)
                rows = [kept[i] for i in m.rows]
                proofs = [tree.proof(i) for i in m.rows]
                await channel.send_encoded([encode(ChallengeRows(m.rid, rows, proofs, receipt))])

    async with hostile_worker(a_tenth_of_the_rows) as (dispatcher, worker):
        with trio.fail_after(30):
            v = await dispatcher.challenge(worker.node_id, n=200, rows=8)
        assert not v.passed and not v.refused
        assert re.search(
            r"row \d+ of round 0 is not row \d+ of that round's product", str(v.reason)
        ), v
        assert dispatcher.views.capacity(worker.node_id) == "failed"


async def test_rows_larger_than_any_product_has_drop_the_worker_saying_why() -> None:
    async def oversized(channel: SecureChannel, me: Identity) -> None:
        m = parse(await channel.receive_frame())
        assert isinstance(m, ChallengeAsk)
        await channel.send_encoded([encode(ChallengeRoot(m.rid, bytes(32), 0.01))])
        opened = parse(await channel.receive_frame())
        assert isinstance(opened, ChallengeOpen)
        big = {"t": "challenge-rows", "rid": opened.rid, "rows": [bytes(70_000)], "proofs": [[]]}
        await channel.send_encoded([msgpack.packb(big | {"receipt": {}}, use_bin_type=True)])
        await trio.sleep_forever()

    async with hostile_worker(oversized) as (dispatcher, worker):
        with trio.fail_after(30):
            v = await dispatcher.challenge(worker.node_id, n=64)
        assert not v.passed and "the channel to it ended" in str(v.reason), v
        assert "challenge-rows.rows[0]" in str(v.reason) and "16384" in str(v.reason)


def worker_config(price: float) -> str:
    """A worker that advertises what it has (detected: this machine's cores, no GPU)."""
    return f'[worker]\ndrivers = ["echo"]\nmin_price = {price}\nchallenge_interval_s = 3600\n'


def first_json(said: str) -> dict:
    """The JSON document a command printed first (`ledger --verify` then says how it went)."""
    return json.loads(said.splitlines()[0])  # type: ignore[no-any-return]


def test_a_user_challenges_a_worker_from_the_cli_and_both_ledgers_show_it(
    tmp_path: Path,
) -> None:
    with (
        gate_and_worker(tmp_path, worker_config(0.25)) as (gate, _, worker, _proc),
        running_node(gate, tmp_path / "node") as node,
    ):
        home = ("--data-dir", str(node))
        done = p2psched("challenge", worker.hex(), "--n", "128", "--rows", "4", *home, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"worker {worker.hex()[:16]}: passed" in done.stdout
        assert "128x128 product, 4 rows checked" in done.stdout and "paid 0.25" in done.stdout
        again = p2psched("challenge", worker.hex(), "--json", *home, timeout=60)
        assert again.returncode == 1
        said = json.loads(again.stdout)
        assert said["refused"] and "one capacity challenge per 3600 s" in said["reason"]
        bad = p2psched("challenge", "12ab", *home, timeout=60)
        assert bad.returncode != 0 and "expected a node id of 64 hex digits" in bad.stderr
        ledger = first_json(p2psched("ledger", "--json", "--verify", *home).stdout)
        job = f"challenge-{worker.hex()[:16]}"
        assert [(j["job"], j["spent"], j["tasks_paid"]) for j in ledger["jobs"]] == [(job, 0.25, 1)]
        assert ledger["problems"] == []
    earned = first_json(
        p2psched("ledger", "--json", "--verify", "--data-dir", str(tmp_path / "w")).stdout
    )
    assert earned["earned"] == 0.25 and earned["problems"] == []


@pytest.mark.parametrize(
    ("override", "passes"),
    [("", True), ("[override]\ncpu_cores = 512\n", False)],
    ids=["its-own-cores", "512-cores"],
)
def test_a_worker_process_claiming_512_cores_here_fails_on_time_and_one_claiming_its_own_passes(
    tmp_path: Path, override: str, passes: bool
) -> None:
    """Issue 18 item 4, as a user runs it on this 2-core machine. Its own cores (2 at 16
    GFLOP/s): one 3634 x 3634 product, ~3 s by its ad, 13 s allowed; it takes 0.7-4 s here,
    loaded or not. 512 cores: 64 rounds of 4096 x 4096 (the most a challenge asks), 1.07 s
    by its ad, 5.3 s allowed; this machine needs 0.92 s a round idle (59 s), more loaded: its
    root is late by over 10x, so a machine several times faster fails it too. (64 cores, 22
    rounds and 12.8 s allowed, also fail here, idle by 1.6x only: too close for a test.)"""
    with (
        gate_and_worker(tmp_path, worker_config(0.25) + override) as (gate, _, worker, _proc),
        running_node(gate, tmp_path / "node") as node,
    ):
        home = ("--data-dir", str(node))
        done = p2psched("challenge", worker.hex(), "--json", *home, timeout=120)
        said = json.loads(done.stdout)
        assert said["passed"] is passes and not said["refused"], said
        assert done.returncode == (0 if passes else 1)
        if passes:
            assert (said["n"], said["rounds"]) == (3634, 1)
            assert said["measured_s"] <= said["limit_s"]
        else:
            assert (said["n"], said["rounds"]) == (4096, 64), said
            assert said["reason"].startswith(f"no product root within {said['limit_s']:.3g} s")
            assert said["reason"].endswith("for 64 4096x4096 products: it overstates its capacity")
            # On the node's record: it failed its challenge, and is skipped for it.
            shown = json.loads(p2psched("workers", "--json", *home).stdout)
            assert shown["node_id"] == worker.hex(), shown
            assert shown["reputation"]["capacity"] == "failed" and shown["reputation"]["barred"]


class HearingRun(JobRun):
    """A job's run that notes each challenge it hears of (`JobRun.challenged`, issue 18),
    with the capacity the node's record then says."""

    heard: list[tuple[bytes, str]]

    def challenged(self, worker: bytes, now: float) -> None:
        self.heard.append((worker, self.views.capacity(worker)))


async def test_a_challenge_jobs_ask_for_runs_once_and_every_job_hears_its_outcome() -> None:
    async with honest_worker() as (dispatcher, worker):
        runs = []
        for name in ("one", "two"):  # jobs that wait: no worker serves their model
            task = replace(spec(0, need="model=none-here"), task_id=task_id_for(name, 0))
            run = HearingRun(
                dispatcher.identity,
                name,
                [task],
                mtr=0,
                now=dispatcher.clock(),
                rids=dispatcher.rids,
                views=dispatcher.views,
            )
            run.heard = []
            dispatcher.add(run)
            runs.append(run)
        dispatcher.challenge_for_jobs(worker.node_id)
        dispatcher.challenge_for_jobs(worker.node_id)  # one at a time: this one starts none
        with trio.fail_after(30):
            while not all(run.heard for run in runs):
                await trio.sleep(0.01)
        await trio.sleep(0.1)  # (a second challenge would have been refused by now)
        assert [run.heard for run in runs] == [[(worker.node_id, "passed")]] * 2


def test_a_job_that_wants_capacity_proved_runs_once_the_worker_passed(tmp_path: Path) -> None:
    """`verify: {challenge: true}`, as a user submits it: the worker is challenged (and paid
    for it) before it gets the job's tasks, which then complete."""
    job = write_job(
        tmp_path / "proved.yaml",
        "name: proved\ndriver: echo\nverify: {challenge: true}\n"
        "template: {input: '{i}'}\nmatrix: {i: [1, 2]}\n",
    )
    with gate_and_worker(tmp_path, worker_config(0.25)) as (gate, _, worker, _proc):
        done = submit_json(job, gate, tmp_path / "results", tmp_path / "me")
        assert done.returncode == 0, done.stdout + done.stderr
    ledger = first_json(
        p2psched("ledger", "--json", "--verify", "--data-dir", str(tmp_path / "me")).stdout
    )
    paid = {j["job"]: (j["spent"], j["tasks_paid"]) for j in ledger["jobs"]}
    assert paid[f"challenge-{worker.hex()[:16]}"] == (0.25, 1)
    assert [v for k, v in paid.items() if k.startswith("proved-")] == [(0.5, 2)]
    assert ledger["problems"] == []


async def test_a_product_the_worker_cannot_compute_is_declined_and_the_worker_serves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # compute_products raising (a MemoryError for n=4096's three 64 MiB matrices on a small
    # machine) escaped the worker's nursery: any scheduler's ask stopped the worker.
    def no_memory(seed: bytes, n: int, rounds: int, *, gpu: bool) -> tuple[MerkleTree, float]:
        raise MemoryError()

    worker = Identity.generate()
    manager = TaskManager(worker, slots=1, price=0.5)
    service = WorkerService(
        worker, manager, {"echo": EchoDriver()}, challenges=ChallengeDesk(worker)
    )
    async with trio.open_nursery() as nursery:
        address = await nursery.start(service.serve)
        first = await dispatcher_for(nursery, worker, address)
        with monkeypatch.context() as patch, trio.fail_after(30):
            patch.setattr("p2psched.worker.service.compute_products", no_memory)
            v = await first.challenge(worker.node_id, n=64)
        assert v.refused and not v.passed and "could not compute the product" in str(v.reason), v
        second = await dispatcher_for(nursery, worker, address)
        with trio.fail_after(30):
            again = await second.challenge(worker.node_id, n=64)
        assert again.passed, again
        nursery.cancel_scope.cancel()


async def test_the_scheduler_serves_on_while_it_checks_the_opened_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Checking rows derives both matrices (about a second at n=4096) and a product row per
    # row opened: done on the trio thread, it stalled the whole node (every job's channels,
    # the DHT, the API) for each challenge, which any worker ad claiming a GPU brings about.
    checking, served = threading.Event(), threading.Event()
    problem, waited = Matrices.problem, []

    def watched(m: Matrices, root: bytes, index: int, row: bytes, proof: list[bytes]) -> str | None:
        # (the scheduler's check of each row: the worker recomputes rows, checks none)
        checking.set()
        waited.append(served.wait(5))  # (at once True when the node goes on serving meanwhile)
        return problem(m, root, index, row, proof)

    async def serving() -> None:
        while True:
            await trio.sleep(0.01)
            if checking.is_set():
                served.set()

    async with honest_worker() as (dispatcher, worker), trio.open_nursery() as nursery:
        nursery.start_soon(serving)
        monkeypatch.setattr(Matrices, "problem", watched)
        with trio.fail_after(30):
            v = await dispatcher.challenge(worker.node_id, n=64)
        assert v.passed, v
        assert waited == [True] * 8  # (a row each)
        nursery.cancel_scope.cancel()
