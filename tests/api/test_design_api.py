"""The design documents' Scheduler API as a client written from the document uses it: plain
HTTP POSTs of the document's JSON, no token, against a devnet's nodes (real processes), and a
model server of the test's own registered as a Task Instance with a worker."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from p2psched import devnet
from p2psched.api.client import ControlClient
from p2psched.resources.instance import instance_id
from tests.harness.devnet import running_devnet
from tests.harness.http_server import JsonHandler
from tests.harness.processes import EXE, p2psched, running_node

MODEL = "ti-test-model"  # what the test's own model server serves: no devnet worker lists it


def echo_prompt(body: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"text": f"registered: {body['prompt']}"}]}


class ModelServer:
    """An OpenAI-compatible server in this process that serves `models`, answers a request's
    body with `answer`'s document, and counts the completions it answers; `healthy=False`:
    one that answers 503 to everything."""

    def __init__(
        self,
        healthy: bool = True,
        models: tuple[str, ...] = (MODEL,),
        answer: Callable[[dict[str, Any]], dict[str, Any]] = echo_prompt,
    ) -> None:
        self.completions = 0
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                listed = [{"id": m, "object": "model"} for m in models]
                self._send({"object": "list", "data": listed})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.completions += 1
                self._send(answer(body))

            def _send(self, doc: dict[str, Any]) -> None:
                if healthy:
                    self.send_json(200, doc)
                else:
                    self.send_json(503, {"error": "loading"})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]

    def __enter__(self) -> ModelServer:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(data_dir: Path, **headers: str) -> httpx.Client:
    """A plain HTTP client for a node's API, as the document's client is: no token."""
    url = json.loads((data_dir / "api.json").read_text())["url"]
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = http.post(path, json=body).json()
    assert isinstance(answer, dict)
    return answer


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def docnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.Devnet]:
    with running_devnet(tmp_path_factory.mktemp("docnet"), 2) as started:
        yield started


def test_strategy_and_predictor_switch_as_the_document_answers(docnet: devnet.Devnet) -> None:
    gate = docnet.folder / "gate"
    with client(gate) as http:
        ok = {"status": "success", "message": "OK"}
        assert post(http, "/scheduler/set", {"name": "round_robin"}) == ok
        assert post(http, "/scheduler/predict_mode", {"mode": "lookup_table"}) == ok
        token = (gate / "api.token").read_text().strip()
        settings = http.get("/v1/scheduler", headers={"authorization": f"Bearer {token}"}).json()
        assert (settings["strategy"], settings["predict_mode"]) == ("round_robin", "lookup_table")
        wrong = post(http, "/scheduler/set", {"name": "fastest"})
        assert wrong["status"] == "error" and "shortest_queue" in wrong["message"]
        wrong = post(http, "/scheduler/predict_mode", {"mode": "psychic"})
        assert wrong["status"] == "error" and "lookup_table" in wrong["message"]
        missing = post(http, "/scheduler/set", {"nom": "cost"})
        assert missing == {"status": "error", "message": "name: Field required"}
        assert post(http, "/scheduler/set", {"name": "cost"}) == ok
        assert post(http, "/scheduler/predict_mode", {"mode": "default"}) == ok


def test_a_registered_instance_serves_its_model_until_it_is_removed(
    docnet: devnet.Devnet,
) -> None:
    gate, worker, other = (docnet.folder / n for n in ("gate", "worker-0", "worker-1"))
    submission = {
        "model_name": MODEL,
        "task_input": {"prompt": "hello p2p world", "max_tokens": 3},
        "metadata": {"input_tokens": 3, "output_tokens": 3},
    }
    with ModelServer() as server, client(gate) as g, client(worker) as w, client(other) as o:
        # Before: nowhere served (asked of another node, whose discovery the gate's is not).
        before = post(o, "/queue/submit", submission)
        assert (
            before["status"] == "error"
            and f"no Task Instance serves model {MODEL!r}" in (before["message"])
        )
        assert (before["task_id"], before["scheduled_ti"]) == ("", "")

        registered = post(w, "/ti/register", {"host": "localhost", "port": server.port})
        worker_id = bytes.fromhex(json.loads((worker / "api.json").read_text())["node_id"])
        ti = instance_id(worker_id, MODEL)
        assert registered["status"] == "success", registered
        assert registered["ti_uuid"] == ti == str(uuid.UUID(ti))
        assert registered["message"].startswith("TaskInstance registered successfully")
        listed = json.loads((worker / "task_instances.json").read_text())["instances"]
        assert listed == [{"host": "localhost", "port": server.port, "model": MODEL}]

        # Its worker advertises the model: discovery finds it, /queue/info lists it.
        found = p2psched("workers", "--need", f"model={MODEL}", "--data-dir", str(gate))
        assert found.returncode == 0 and f"1 worker(s) matching model={MODEL}" in found.stdout
        queues = post(g, "/queue/info", {"model_name": MODEL})
        assert queues["status"] == "success"
        assert [(q["model_name"], q["ti_uuid"]) for q in queues["queues"]] == [(MODEL, ti)]
        assert queues["queues"][0]["waiting_time_expect"] >= 0

        placed = post(g, "/queue/submit", submission)
        assert placed["status"] == "success", placed
        assert re.fullmatch(r"task-[0-9a-f-]{36}", placed["task_id"])
        assert placed["scheduled_ti"] in ("", ti)

        def query() -> dict[str, Any]:
            return post(g, "/task/query", {"task_id": placed["task_id"]})

        assert query()["task_status"] in ("queued", "scheduled", "completed")
        wait_for(lambda: query()["task_status"] == "completed", "the submitted task")
        done = query()
        assert done["result"] == {"choices": [{"text": "registered: hello p2p world"}]}
        assert done["scheduled_ti"] == ti and done["task_id"] == placed["task_id"]
        assert abs(done["submit_time"] - time.time()) < 120
        assert done["submit_time"] == round(done["submit_time"], 3)
        assert server.completions == 1

        # Removed: no longer advertised, and no new task goes there.
        removed = post(w, "/ti/remove", {"ti_uuid": ti})
        assert removed["status"] == "success" and removed["ti_uuid"] == ti
        assert json.loads((worker / "task_instances.json").read_text())["instances"] == []
        after = post(g, "/queue/submit", submission)
        assert after["status"] == "error" and "no Task Instance serves" in after["message"]
        assert post(g, "/queue/info", {"model_name": MODEL})["queues"] == []
        assert server.completions == 1
        again = post(w, "/ti/remove", {"ti_uuid": ti})
        assert again["status"] == "error" and "TaskInstance not found" in again["message"]
        assert again["ti_uuid"] == ti
        assert post(w, "/ti/remove", {"ti_uuid": "not-a-uuid"}) == {
            "status": "error",
            "message": "Invalid UUID format",
            "ti_uuid": "not-a-uuid",
        }
        unknown = post(g, "/task/query", {"task_id": f"task-{uuid.uuid4()}"})
        assert unknown["status"] == "error" and "no task" in unknown["message"]


def test_a_server_that_is_down_or_unwell_is_refused(docnet: devnet.Devnet) -> None:
    worker, gate = docnet.folder / "worker-1", docnet.folder / "gate"
    with ModelServer(healthy=False) as sick, client(worker) as w, client(gate) as g:
        refused = post(w, "/ti/register", {"host": "127.0.0.1", "port": closed_port()})
        assert refused == {"status": "error", "message": "Connection refused", "ti_uuid": ""}
        unwell = post(w, "/ti/register", {"host": "127.0.0.1", "port": sick.port})
        assert unwell["status"] == "error" and unwell["ti_uuid"] == ""
        assert unwell["message"].startswith("Health check failed") and "503" in unwell["message"]
        bad = post(w, "/ti/register", {"host": "a/b@c", "port": 80})
        assert bad["status"] == "error" and "host name" in bad["message"]
        no_worker = post(g, "/ti/register", {"host": "127.0.0.1", "port": sick.port})
        assert no_worker["status"] == "error" and "not a worker" in no_worker["message"]
        kept = worker / "task_instances.json"
        assert not kept.exists() or "instances" in json.loads(kept.read_text())
        assert not kept.exists() or str(sick.port) not in kept.read_text()


def test_the_devnets_model_server_registers(docnet: devnet.Devnet) -> None:
    worker = docnet.folder / "worker-1"
    port = json.loads((docnet.folder / "model-server.json").read_text())["port"]
    with client(worker) as w:
        registered = post(w, "/ti/register", {"host": "127.0.0.1", "port": port})
        assert registered["status"] == "success", registered
        assert [i["model_name"] for i in registered["instances"]] == ["devnet-test-model"]
        assert post(w, "/ti/remove", {"ti_uuid": registered["ti_uuid"]})["status"] == "success"


def _answers(data: Path) -> bool:
    found = ControlClient.find(data)
    if found is not None:
        found.close()
    return found is not None


@contextmanager
def worker_on(net: devnet.Devnet, data: Path) -> Iterator[Path]:
    """A worker of its own (a devnet worker's config), joined to the devnet, on `data`."""
    config = data.parent / "worker.toml"
    config.write_text((net.folder / "worker-1.toml").read_text())
    argv = ["worker", "join", "--gate", net.gate, "--config", str(config), "--data-dir", str(data)]
    with subprocess.Popen([*EXE, *argv], stdout=subprocess.DEVNULL) as proc:
        try:
            wait_for(lambda: _answers(data), "the worker's API")
            yield data
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0


def test_registered_instances_are_served_again_after_a_restart(
    docnet: devnet.Devnet, tmp_path: Path
) -> None:
    data = tmp_path / "worker"
    with ModelServer() as server, client(docnet.folder / "gate") as gate:
        with worker_on(docnet, data), client(data) as w:
            ti = post(w, "/ti/register", {"host": "127.0.0.1", "port": server.port})["ti_uuid"]
        with worker_on(docnet, data):  # the same node, started again
            listed = post(gate, "/queue/info", {"model_name": MODEL})["queues"]
            assert [q["ti_uuid"] for q in listed] == [ti]
            asked = {"model_name": MODEL, "task_input": {"prompt": "again"}, "metadata": {}}
            task = post(gate, "/queue/submit", asked)["task_id"]

            def answered() -> bool:
                return post(gate, "/task/query", {"task_id": task})["task_status"] == "completed"

            wait_for(answered, "the task after the restart")
            done = post(gate, "/task/query", {"task_id": task})
            assert done["result"] == {"choices": [{"text": "registered: again"}]}
            assert done["scheduled_ti"] == ti and server.completions == 1


def test_queue_info_lists_instances_of_workers_the_node_never_used(
    docnet: devnet.Devnet, tmp_path: Path
) -> None:
    gate = docnet.folder / "gate"
    token = (gate / "api.token").read_text().strip()
    with client(gate, authorization=f"Bearer {token}") as g:
        ads = g.get("/v1/workers").json()["workers"]
    expected = {
        (model, instance_id(bytes.fromhex(ad["node_id"]), model))
        for ad in ads
        for model in ad["models"]
    }
    assert len(expected) >= 2
    with running_node(docnet.gate, tmp_path / "fresh") as fresh, client(fresh) as http:
        answer = post(http, "/queue/info", {})
        assert answer["status"] == "success"
        assert {(q["model_name"], q["ti_uuid"]) for q in answer["queues"]} == expected
        assert all(
            q["waiting_time_expect"] > 0 and q["waiting_time_error"] > 0 for q in answer["queues"]
        )  # (no history, no quote: the predictor's default, in milliseconds)
        model = "llama-3-8b"
        only = post(http, "/queue/info", {"model_name": model})["queues"]
        assert only and {q["model_name"] for q in only} == {model}


def test_without_the_token_only_loopback_asking_by_a_loopback_name_gets_in(
    docnet: devnet.Devnet,
) -> None:
    gate = docnet.folder / "gate"
    for host in ("localhost", "LOCALHOST:8080", "127.0.0.1"):
        with client(gate, host=host) as http:
            answer = http.post("/queue/info", json={})
            assert answer.status_code == 200 and answer.json()["status"] == "success", host
    for headers in ({"host": "evil.example"}, {"origin": "http://evil.example"}):
        with client(gate, **headers) as http:
            for path in ("/queue/info", "/scheduler/set"):
                answer = http.post(path, json={"name": "round_robin"})
                assert answer.status_code == 401, (headers, path)
                assert "bearer token" in answer.json()["message"]
    with client(gate) as http:
        assert http.get("/v1/node").status_code == 401  # any other path: the token, as ever
        assert http.post("/v1/scheduler/set", json={"name": "cost"}).status_code == 401
