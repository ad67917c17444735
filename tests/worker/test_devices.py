"""A worker's GPUs, given to its tasks: on a recorded four-GPU machine (NVML answers from
tests/resources/data), real commands print the CUDA_VISIBLE_DEVICES they were run with, and
tasks that run at once never share a device; an http task bound to a GPU keeps it from
commands; a task needing more GPUs than the worker has is refused, one needing more than are
free waits."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched.identity import Identity
from p2psched.node.node import JoinError, Node, open_node
from p2psched.resources.detect import detect
from p2psched.scheduler.job import parse_job
from p2psched.wire.deal import Commitment
from p2psched.wire.messages import Send
from p2psched.worker import manager as wm
from p2psched.worker.config import (
    CommandDriverConfig,
    ConfigError,
    HttpDriverConfig,
    WorkerConfig,
    load_config,
)
from p2psched.worker.devices import Claims, Devices
from p2psched.worker.manager import Start
from tests.harness.net import commit, on_wire, wire
from tests.harness.network import network
from tests.harness.nvml import RecordedNvml, recording

# Prints the devices it was given, and when it held them (the clock of the one machine).
SHOWS_DEVICES = """\
import json, os, time
start = time.time()
time.sleep(1.5)
print(json.dumps({"devices": os.environ["CUDA_VISIBLE_DEVICES"], "start": start,
                  "end": time.time(), "env": sorted(k for k in os.environ if "VISIBLE" in k)}))
"""
PROGRAMS = {"py": {"argv": ["/usr/bin/python3"], "params": {"script": {"type": "file"}}}}
UUIDS = {d["nvmlDeviceGetUUID"] for d in recording("nvml_4x_l4.json")["devices"]}


async def shown_devices(scheduler: Node, tasks: int, **resources: Any) -> list[dict[str, Any]]:
    """What each of `tasks` commands printed, run as one job needing `resources`."""
    task = {"program": "py", "params": {"script": "s.py"}, "files": {"s.py": SHOWS_DEVICES}}
    spec = {
        "name": "gpus",
        "driver": "command",
        "retries": 0,
        "timeout": 60,
        "resources": resources,
        "tasks": [{"input": task}] * tasks,
    }
    job = scheduler.jobs.submit(parse_job(spec))
    with trio.fail_after(120):
        await job.done.wait()
    outputs = [(t.state.name, t.output, t.error) for t in job.run.tasks.values()]
    assert all(state == "COMPLETED" for state, _, _ in outputs), outputs
    return [json.loads(out["stdout"]) for _, out, _ in outputs]


def assert_disjoint_while_overlapping(shown: list[dict[str, Any]]) -> int:
    """No two tasks that ran at the same time had a device in common; how many pairs did."""
    overlapping = 0
    for a, b in itertools.combinations(shown, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:
            overlapping += 1
            assert not set(a["devices"].split(",")) & set(b["devices"].split(",")), (a, b)
    return overlapping


async def test_concurrent_commands_get_disjoint_gpus_by_uuid(tmp_path: Path) -> None:
    machine = detect(tmp_path, nvml=RecordedNvml(recording("nvml_4x_l4.json")))
    config = WorkerConfig(
        slots=4, drivers=("command",), command_driver=CommandDriverConfig(programs=PROGRAMS)
    )
    async with network(tmp_path, [config], detected=machine) as (scheduler, _):
        # A task that asks for nothing gets its slot's share: one GPU of four.
        shown = await shown_devices(scheduler, 4)
        assert sorted(s["devices"] for s in shown) == sorted(UUIDS)
        assert assert_disjoint_while_overlapping(shown) == 6  # all four ran at once
        assert all(s["env"] == ["CUDA_VISIBLE_DEVICES"] for s in shown)  # nothing else GPU-ish

        # Two GPUs each: two run at once, on disjoint pairs; the others wait their turn.
        shown = await shown_devices(scheduler, 4, gpus=2)
        assert all(len(set(s["devices"].split(","))) == 2 for s in shown)
        assert all(set(s["devices"].split(",")) <= UUIDS for s in shown)
        assert 1 <= assert_disjoint_while_overlapping(shown) < 6


def run(w: wm.TaskManager, sched: Identity, task_id: str, **task: Any) -> None:
    commit(w, sched, task_id, 0.0, task.get("gpus", 0))
    sent = {"id": task_id, "model": None, "input": 1, "timeout": 5.0, **task}
    w.receive(sched.node_id, wire({"t": "run", "tasks": [sent]}), 0.0)


def started(w: wm.TaskManager) -> dict[str, tuple[int, ...]]:
    return {
        a.task.id: tuple(d.index for d in a.devices) for a in w.actions() if isinstance(a, Start)
    }


def test_an_http_task_bound_to_a_gpu_keeps_commands_off_it_until_it_ends(tmp_path: Path) -> None:
    machine = detect(tmp_path, nvml=RecordedNvml(recording("nvml_4x_l4.json")))
    w = wm.TaskManager(
        Identity.generate(),
        slots=4,
        queue_depth=8,
        devices=Devices(machine.devices),
        claim=Claims(1, {"llama": (0,)}, frozenset({"llama"})),
    )
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    w.actions()
    run(w, sched, "chat1", driver="http", model="llama")
    run(w, sched, "chat2", driver="http", model="llama")  # shares the model server's GPU
    run(w, sched, "all", driver="command", gpus=4)  # waits: GPU 0 serves the model
    run(w, sched, "one", driver="command")  # in order, behind it
    assert started(w) == {"chat1": (0,), "chat2": (0,)}
    w.finished(sched.node_id, "chat1", {}, None, 1.0)
    assert started(w) == {}
    w.finished(sched.node_id, "chat2", {}, None, 2.0)
    assert started(w) == {"all": (0, 1, 2, 3)}
    w.finished(sched.node_id, "all", {}, None, 3.0)
    assert started(w) == {"one": (0,)}
    # More than the machine has is refused at once, with the reason.
    run(w, sched, "eight", driver="command", gpus=8)
    sent = [on_wire(a.message) for a in w.actions() if isinstance(a, Send)]
    [result] = [m for m in sent if m["t"] == "result"]
    assert result["error"] == "the task needs 8 GPUs; this worker has 4"


def test_a_device_binding_must_name_an_endpoint_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(
        '[worker]\ndrivers = ["http"]\n[drivers.http]\n'
        'endpoints = { m = "http://127.0.0.1:8000/v1" }\ndevices = { other = 0 }\n'
    )
    with pytest.raises(ConfigError, match=r"\[drivers.http\] devices.other: 'other' has no endp"):
        load_config(path)
    path.write_text(path.read_text().replace("{ other = 0 }", '{ m = "0" }'))
    with pytest.raises(ConfigError, match=r"devices.m: must be a GPU index 0..63 or a list"):
        load_config(path)
    path.write_text(path.read_text().replace('{ m = "0" }', "{ m = [1, 0] }"))
    assert load_config(path).http_driver.devices == {"m": (0, 1)}


async def test_a_worker_bound_to_a_gpu_it_lacks_does_not_start(tmp_path: Path) -> None:
    machine = detect(tmp_path, nvml=RecordedNvml(recording("nvml_dgx_a100.json")))
    http = HttpDriverConfig(endpoints={"m": "http://127.0.0.1:9/v1"}, devices={"m": (1, 2)})
    config = WorkerConfig(drivers=("http",), models=("m",), http_driver=http)
    refused = []
    try:
        async with open_node(Identity.generate(), tmp_path / "w", worker=config, detected=machine):
            pass
    except* JoinError as group:  # (from inside the node's nurseries: the CLI shows it alone)
        while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
            group = group.exceptions[0]  # type: ignore[assignment]
        refused = [str(group)]
    assert refused == ["[drivers.http] devices.m: GPU 2 is not on this machine (NVML found 2)"]


def test_a_task_is_priced_by_the_slots_its_gpus_take_and_runs_only_as_committed(
    tmp_path: Path,
) -> None:
    """On a 4-slot, 4-GPU worker at 1.0 a task, a task taking all four GPUs costs four
    slots' price: it is quoted so, committed so, and a task committed for one slot's price
    that then asks for four GPUs is refused (sent with its commitment, or after it), and
    never started."""
    machine = detect(tmp_path, nvml=RecordedNvml(recording("nvml_4x_l4.json")))
    w = wm.TaskManager(
        Identity.generate(),
        slots=4,
        price=1.0,
        devices=Devices(machine.devices),
        claim=Claims(1),
    )
    sched = Identity.generate()
    w.connected(sched.node_id, sched.public_key, 0.0)
    w.actions()

    starts: list[Start] = []

    def answers(message: dict[str, Any]) -> list[Any]:
        w.receive(sched.node_id, wire(message), 0.0)
        done = w.actions()
        starts.extend(a for a in done if isinstance(a, Start))
        return [on_wire(a.message) for a in done if isinstance(a, Send)]

    ask = {"t": "quote?", "job": "job", "tasks": 1, "driver": "command", "model": None}
    quoted = {
        gpus: answers({**ask, "rid": gpus, "max_price": 10.0, "gpus": gpus})[0]["quote"]
        for gpus in (0, 1, 2, 4)
    }
    assert {g: (q["price"], q["gpus"]) for g, q in quoted.items()} == {
        0: (1.0, 0),
        1: (1.0, 1),
        2: (2.0, 2),
        4: (4.0, 4),
    }
    [declined] = answers({**ask, "rid": 9, "max_price": 3.0, "gpus": 4})
    assert declined["reason"] == "price below its minimum: asks 4, offered at most 3"

    def commit(ids: list[str], price: float, gpus: int, run: list[Any]) -> list[Any]:
        c = Commitment(sched.node_id, w.identity.node_id, "job", ids, price, 0.0, gpus)
        return answers(
            {"t": "commit", "rid": 1, "commitment": c.signed(sched).to_wire(), "run": run}
        )

    sent = {"driver": "command", "model": None, "input": 1, "timeout": 5.0}
    # Four GPUs at one slot's price: rejected.
    [rejected] = commit(["a"], 1.0, 4, [])
    assert rejected["reason"] == "price 1 is below this worker's minimum 4 for a task of 4 GPUs"
    # One slot's commitment, then a task asking for all four GPUs: refused, with it or after.
    [rejected] = commit(["b"], 1.0, 0, [{**sent, "id": "b", "gpus": 4}])
    assert rejected["t"] == "reject" and not rejected["busy"]
    assert rejected["reason"] == (
        "task b asks for 4 GPUs, but its commitment is for a slot's share of GPUs"
    )
    assert [m["t"] for m in commit(["c"], 1.0, 0, [])] == ["lease"]
    [result] = answers({"t": "run", "tasks": [{**sent, "id": "c", "gpus": 4}]})
    assert (
        result["error"]
        == "task c asks for 4 GPUs, but its commitment is for a slot's share of GPUs"
    )
    assert result["receipt"]["price"] == 0.0
    assert starts == []
    # Paid for the four: it runs on all of them.
    assert [m["t"] for m in commit(["d"], 4.0, 4, [{**sent, "id": "d", "gpus": 4}])] == ["lease"]
    assert [(a.task.id, [d.index for d in a.devices]) for a in starts] == [("d", [0, 1, 2, 3])]
