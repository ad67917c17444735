"""The design document 003's REST API (`/api/v1/tasks`, `/api/v1/workers`) through a real HTTP
client with the node's token, against a devnet (real processes) whose workers serve their
models through the http driver from the devnet's test model server."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from p2psched import devnet
from tests.harness.devnet import running_devnet

TASK_ID = re.compile(r"task-[0-9a-f-]{36}")


def api(data_dir: Path, token: bool = True) -> httpx.Client:
    url = json.loads((data_dir / "api.json").read_text())["url"]
    bearer = (data_dir / "api.token").read_text().strip()
    headers = {"authorization": f"Bearer {bearer}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def node_id(data_dir: Path) -> str:
    return str(json.loads((data_dir / "api.json").read_text())["node_id"])


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.1)


def ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()


def refused(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    said = answer.json()
    assert said["status"] == "error"
    return str(said["message"])


@pytest.fixture(scope="module")
def restnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.Devnet]:
    # worker-0 serves llama-3-8b, worker-1 llama-3-70b (devnet.PROFILES)
    with running_devnet(tmp_path_factory.mktemp("restnet"), 2) as started:
        yield started


def test_tasks_are_created_followed_listed_and_cancelled(restnet: devnet.Devnet) -> None:
    gate_dir, busy_dir = restnet.folder / "gate", restnet.folder / "worker-1"
    with api(gate_dir) as gate, api(busy_dir) as busy:
        asked = {
            "name": "Text Generation",
            "model": "llama-3-8b",
            "input": {"prompt": "hello p2p world"},
            "priority": 7,
        }
        created = ok(gate.post("/api/v1/tasks", json=asked), 201)
        assert TASK_ID.fullmatch(created["id"])
        assert (created["name"], created["model"], created["priority"]) == (
            "Text-Generation",
            "llama-3-8b",
            7,
        )
        path = f"/api/v1/tasks/{created['id']}"
        wait_for(lambda: ok(gate.get(path))["status"] == "completed", "the task")
        done = ok(gate.get(path))
        assert "echo: hello p2p world" in json.dumps(done["result"]) and done["worker"]

        # A task no worker takes (the one serving its model drains) waits queued; cancelled.
        held = node_id(busy_dir)
        drained = ok(busy.put(f"/api/v1/workers/{held}/status", json={"status": "draining"}))
        assert (drained["status"], drained["worker"]) == ("draining", held)
        said = refused(gate.put(f"/api/v1/workers/{held}/status", json={"status": "active"}), 404)
        assert held in said and "ask the node that is that worker" in said
        late = ok(gate.post("/api/v1/tasks", json={"model": "llama-3-70b", "input": {}}), 201)
        assert (late["status"], late["priority"], late["name"]) == (
            "queued",
            5,
            "queue-llama-3-70b",
        )
        late_path = f"/api/v1/tasks/{late['id']}"
        assert ok(gate.delete(late_path))["status"] == "cancelled"
        assert ok(gate.get(late_path))["status"] == "cancelled"
        assert "already ended: cancelled" in refused(gate.delete(late_path), 409)
        assert ok(busy.put(f"/api/v1/workers/{held}/heartbeat"))["status"] == "draining"
        active = ok(busy.put(f"/api/v1/workers/{held}/status", json={"status": "active"}))
        assert active["status"] == "active"

        # Lists, filtered and paged: newest first.
        def listed(**query: Any) -> list[str]:
            return [t["id"] for t in ok(gate.get("/api/v1/tasks", params=query))["tasks"]]

        assert listed() == [late["id"], created["id"]]
        assert listed(model="llama-3-8b") == [created["id"]]
        assert listed(status="cancelled") == [late["id"]]
        assert listed(status="completed", model="llama-3-70b") == []
        page = ok(gate.get("/api/v1/tasks", params={"limit": 1, "offset": 1}))
        assert (page["total"], [t["id"] for t in page["tasks"]]) == (2, [created["id"]])
        assert "queued, scheduled" in refused(gate.get("/api/v1/tasks?status=lost"), 422)

        # Unknown ids, bad bodies.
        unknown = f"task-{uuid.uuid4()}"
        assert unknown in refused(gate.get(f"/api/v1/tasks/{unknown}"), 404)
        assert unknown in refused(gate.delete(f"/api/v1/tasks/{unknown}"), 404)
        assert "task-<uuid>" in refused(gate.get("/api/v1/tasks/nope"), 422)
        assert "model" in refused(gate.post("/api/v1/tasks", json={"input": {}}), 422)
        said = refused(gate.post("/api/v1/tasks", json={**asked, "priority": 10}), 422)
        assert "priority" in said
        said = refused(gate.post("/api/v1/tasks", json={**asked, "model": "gpt-9"}), 404)
        assert "gpt-9" in said


def test_workers_are_listed_registered_and_checked(restnet: devnet.Devnet) -> None:
    gate_dir, worker_dir = restnet.folder / "gate", restnet.folder / "worker-0"
    server = json.loads((restnet.folder / f"{devnet.MODEL_SERVER}.json").read_text())
    with api(gate_dir) as gate, api(worker_dir) as worker:
        listed = ok(gate.get("/api/v1/workers"))["workers"]
        own = node_id(worker_dir)
        mine = next(w for w in listed if w["id"] == own)
        assert len(listed) == 2 and mine["models"] == ["llama-3-8b"]
        assert [i["model"] for i in mine["instances"]] == ["llama-3-8b"]

        where = {"host": "127.0.0.1", "port": server["port"]}
        assert "not a worker" in refused(gate.post("/api/v1/workers", json=where), 409)
        registered = ok(worker.post("/api/v1/workers", json=where), 201)["instances"]
        ti = registered[0]["id"]
        assert uuid.UUID(ti) and registered[0]["model"] == "devnet-test-model"
        beat = ok(worker.put(f"/api/v1/workers/{ti}/heartbeat"))
        assert (beat["checked"], beat["worker"], beat["status"]) == (
            "devnet-test-model",
            own,
            "active",
        )
        assert {"id": ti, "model": "devnet-test-model"} in beat["instances"]
        assert ok(worker.put(f"/api/v1/workers/{own}/heartbeat"))["checked"] == ""
        assert own in refused(gate.put(f"/api/v1/workers/{own}/heartbeat"), 404)
        said = refused(worker.put(f"/api/v1/workers/{own}/status", json={"status": "off"}), 422)
        assert "status" in said


def test_the_paths_need_the_token(restnet: devnet.Devnet) -> None:
    some = f"task-{uuid.uuid4()}"
    with api(restnet.folder / "gate", token=False) as anyone:
        for method, path in [
            ("POST", "/api/v1/tasks"),
            ("GET", "/api/v1/tasks"),
            ("GET", f"/api/v1/tasks/{some}"),
            ("DELETE", f"/api/v1/tasks/{some}"),
            ("POST", "/api/v1/workers"),
            ("GET", "/api/v1/workers"),
            ("PUT", "/api/v1/workers/x/heartbeat"),
            ("PUT", "/api/v1/workers/x/status"),
        ]:
            assert "bearer token" in refused(anyone.request(method, path, json={}), 401)
