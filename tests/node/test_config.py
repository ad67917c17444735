"""A node's config file (`--config`) as an operator uses it: a gate, a worker and a node, each its
own process on loopback with its own file, and a model server. The control API listens where
[server] says (a flag winning over it), the state is where [database] says, a model's
[models.NAME] requirements reach its tasks (a worker lacking them is never chosen, and the
refusal names the need), the timeouts and the gateway's bounds take effect, and a bad file is
refused before the node starts, naming the file, the table and the key."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from p2psched import devnet_model
from p2psched.node.config import load_node_config
from p2psched.scheduler.worker_views import ReputationRules
from tests.harness.http_server import JsonHandler, serving
from tests.harness.processes import free_udp_port, p2psched, running

SMALL = "small-model"  # what the worker has: an A100 with 80 GiB, 64 GiB of RAM
BIG = "big-model"  # needs a GPU larger than it has
SLOW = "slow-model"  # served by a server that never answers
DEAR = "dear-model"  # may pay less than the worker asks (0.02 a task)


@dataclass(frozen=True)
class Net:
    folder: Path
    gate: str  # its control API's URL
    worker: str
    node: str
    node_said: str
    token: str  # the node's
    gate_token: str


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Silent(JsonHandler):
    """A model server that lists its model and answers no prompt (until the test ends)."""

    protocol_version = "HTTP/1.1"
    done = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_json(200, devnet_model.models())

    def do_POST(self) -> None:  # noqa: N802
        self.done.wait(120)


@contextmanager
def serving_port(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """`serving`, its port."""
    with serving(handler) as url:
        yield int(url.rsplit(":", 1)[1])


def url_of(said: str) -> str:
    return said.split("control API ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    folder = tmp_path_factory.mktemp("configured")
    (folder / "db").mkdir()
    gate = f"127.0.0.1:{free_udp_port()}"
    gate_api, gate_flag, node_api = free_tcp_port(), free_tcp_port(), free_tcp_port()
    with ExitStack() as stack:
        model = stack.enter_context(serving_port(devnet_model._Handler))
        silent = stack.enter_context(serving_port(_Silent))
        stack.callback(_Silent.done.set)  # (its requests end before it shuts down)
        (folder / "gate.toml").write_text(
            f"[server]\nport = {gate_api}\nkeep_alive_s = 60\nrequest_timeout_s = 1\n"
            "[relay]\ncircuits = 64\n"
        )
        (folder / "worker.toml").write_text(
            "[worker]\n"
            'drivers = ["http"]\n'
            f'models = ["{SMALL}", "{BIG}", "{SLOW}", "{DEAR}"]\n'
            "min_price = 0.02\n"
            "[drivers.http]\n"
            f'endpoints = {{ "{SLOW}" = "http://127.0.0.1:{silent}/v1/chat/completions", '
            f'"*" = "http://127.0.0.1:{model}/v1/chat/completions" }}\n'
            "[override]\n"
            "ram_gb = 64\n"
            'gpus = [{ model = "NVIDIA A100-SXM4-80GB", vram_gb = 80 }]\n'
            "[database]\n"
            'path = "db/worker.db"\n'
            "[server]\n"
            "read_timeout_s = 2\n"
            "request_timeout_s = 2\n"
        )
        (folder / "node.toml").write_text(
            f"[server]\nport = {node_api}\nmax_request_bytes = 4096\n"
            '[database]\npath = "db/node.db"\n'
            f'[models."{SMALL}"]\nvram_gb = 40\ngpus = 1\nram_gb = 32\nmax_output_tokens = 3\n'
            f'[models."{BIG}"]\nvram_gb = 100\n'
            f'[models."{SLOW}"]\ntimeout_s = 1\n'
            f'[models."{DEAR}"]\nmax_price = 0.01\n'
        )
        config = ("--config", str(folder / "gate.toml"), "--api-port", str(gate_flag))
        _, gate_said = stack.enter_context(
            running("gate", "--listen", gate, *config, data=folder / "g")
        )
        config = ("--config", str(folder / "worker.toml"))
        _, worker_said = stack.enter_context(
            running("worker", "join", "--gate", gate, *config, data=folder / "w")
        )
        config = ("--config", str(folder / "node.toml"))
        _, node_said = stack.enter_context(
            running("node", "--gate", gate, *config, data=folder / "n")
        )
        yield Net(
            folder,
            url_of(gate_said),
            url_of(worker_said),
            url_of(node_said),
            node_said,
            (folder / "n" / "api.token").read_text().strip(),
            (folder / "g" / "api.token").read_text().strip(),
        )


def api(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=60)


def chat(net: Net, model: str, content: str, **more: object) -> httpx.Response:
    with api(net.node, net.token) as http:
        ask = {"model": model, "messages": [{"role": "user", "content": content}], **more}
        return http.post("/v1/chat/completions", json=ask)


def test_the_api_listens_where_server_says_and_a_flag_wins_over_it(net: Net) -> None:
    config = (net.folder / "node.toml").read_text()
    port = config.split("port = ", 1)[1].split()[0]
    assert net.node == f"http://127.0.0.1:{port}"
    with api(net.node, net.token) as http:
        assert http.get("/v1/node").status_code == 200
    gate_config = (net.folder / "gate.toml").read_text().split("port = ", 1)[1].split()[0]
    assert not net.gate.endswith(f":{gate_config}")  # --api-port's, not the file's
    with api(net.gate, net.gate_token) as http:
        assert http.get("/v1/node").json()["roles"][0] == "gate"


def test_the_state_is_where_database_says(net: Net) -> None:
    with api(net.node, net.token) as http:
        placed = http.post(
            "/queue/submit", json={"model_name": SMALL, "task_input": {"prompt": "keep me"}}
        ).json()
    assert placed["status"] == "success", placed
    assert not (net.folder / "n" / "state.db").exists()
    with sqlite3.connect(net.folder / "db" / "node.db") as db:
        jobs = [row[0] for row in db.execute("SELECT id FROM jobs")]
    assert placed["task_id"] in jobs
    assert (net.folder / "db" / "worker.db").exists()
    assert not (net.folder / "w" / "state.db").exists()
    stopped = ("--data-dir", str(net.folder / "no-node-here"))  # (as if the node were stopped)
    config = ("--config", str(net.folder / "node.toml"))
    out = p2psched("ledger", "--json", *config, *stopped)
    assert out.returncode == 0 and placed["task_id"] in out.stdout, out.stdout + out.stderr
    out = p2psched("ledger", *stopped)
    assert out.returncode == 2 and "no ledger at" in out.stderr


def test_a_models_requirements_choose_its_worker_and_the_refusal_names_them(net: Net) -> None:
    with api(net.node, net.token) as http:
        placed = http.post("/queue/submit", json={"model_name": SMALL, "task_input": {}}).json()
        assert placed["status"] == "success" and placed["scheduled_ti"], placed
        refused = http.post("/queue/submit", json={"model_name": BIG, "task_input": {}}).json()
    assert refused["status"] == "error" and "vram>=100" in refused["message"], refused
    r = chat(net, BIG, "too big")
    assert r.status_code == 404 and "vram>=100" in r.json()["error"]["message"], r.text
    data = ("--data-dir", str(net.folder / "n"))
    out = p2psched("create-task", "--name", "big", "--model", BIG, "--input", "{}", *data)
    assert out.returncode != 0 and "vram>=100" in out.stderr, out.stderr


def test_a_models_max_output_tokens_bounds_the_gateways_answers(net: Net) -> None:
    r = chat(net, SMALL, "one two three four five six")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: one two three"
    r = chat(net, SMALL, "one two three four", max_tokens=None)  # (null: not said)
    assert r.json()["choices"][0]["message"]["content"] == "echo: one two three", r.text
    r = chat(net, SMALL, "one two", max_tokens=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
    assert "1..3" in r.json()["error"]["message"]


def test_a_models_max_output_tokens_bounds_all_the_answers_a_request_asks_for(net: Net) -> None:
    """`n` answers (or /v1/completions' `best_of`) of `max_tokens` each are n x max_tokens
    tokens of the worker's: together within the model's max_output_tokens (3)."""
    r = chat(net, SMALL, "one two three", n=3)  # (no max_tokens: a third of 3 each)
    assert r.status_code == 200, r.text
    said = [c["message"]["content"] for c in r.json()["choices"]]
    assert said == ["echo: one"] * 3, said
    r = chat(net, SMALL, "one two", n=2, max_tokens=2)
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "max_tokens", r.text
    assert "1..1 for this model" in error["message"] and "n = 2" in error["message"], error
    r = chat(net, SMALL, "one", n=4)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text
    assert "max_output_tokens, 3" in r.json()["error"]["message"], r.text
    with api(net.node, net.token) as http:
        ask = {"model": SMALL, "prompt": "one two", "max_tokens": 2, "best_of": 2}
        r = http.post("/v1/completions", json=ask)
    error = r.json()["error"]
    assert r.status_code == 400 and "best_of = 2" in error["message"], r.text


def test_a_models_max_price_caps_what_its_tasks_may_pay(net: Net) -> None:
    r = chat(net, DEAR, "too dear")  # the worker asks 0.02; its [models] max_price is 0.01
    assert r.status_code == 503 and r.json()["error"]["code"] == "over_price_cap", r.text
    said = r.json()["error"]["message"]
    assert "price cap of 0.01" in said and "asks 0.02" in said, said
    with api(net.node, net.token) as http:
        refused = http.post("/api/v1/tasks", json={"model": DEAR, "input": {}})
    assert refused.status_code == 503 and "price cap of 0.01" in refused.text, refused.text
    r = chat(net, SMALL, "within the cap")  # [server] max_price's default, 0.1, pays 0.02
    assert r.status_code == 200, r.text


def test_the_gateways_timeouts_and_body_bound_take_effect(net: Net) -> None:
    r = chat(net, SLOW, "never answered")  # its [models] timeout_s
    assert r.status_code == 504 and "within 1 s" in r.json()["error"]["message"], r.text
    with api(net.gate, net.gate_token) as http:  # the gate's [server] request_timeout_s
        ask = {"model": SLOW, "messages": [{"role": "user", "content": "never"}]}
        r = http.post("/v1/chat/completions", json=ask)
    assert r.status_code == 504 and "within 1 s" in r.json()["error"]["message"], r.text
    r = chat(net, SMALL, "x" * 5000)
    assert r.status_code == 413 and "over 4096 bytes" in r.json()["error"]["message"], r.text


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=60)


def test_a_connection_that_sends_nothing_is_closed_after_read_timeout(net: Net) -> None:
    with connect(net.worker) as s:  # (its [server] read_timeout_s = 2)
        s.sendall(b"GET /v1/node HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # (and never the rest)
        try:
            got = s.recv(4096)
        except ConnectionResetError:
            got = b""
    assert got == b""  # closed by the worker (its default would wait for ever)


def test_an_idle_connection_is_kept_for_keep_alive(net: Net) -> None:
    with connect(net.gate) as s, s.makefile("rb") as answers:
        assert openapi_on(s, answers)
        time.sleep(6)  # idle past the default keep-alive, 5 s (the gate's is 60 s)
        assert openapi_on(s, answers)  # the same connection still serves


def openapi_on(s: socket.socket, answers: BinaryIO) -> bool:
    """Whether GET /openapi.json (a public path) on the connection `s` is answered."""
    s.sendall(b"GET /openapi.json HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    if not answers.readline().startswith(b"HTTP/1.1 200"):
        return False
    head = list(iter(answers.readline, b"\r\n"))
    length = next(int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length"))
    return answers.read(length).startswith(b"{")


@pytest.mark.parametrize(
    ("role", "text", "said"),
    [
        ("node", "[server]\nport = 70000\n", "[server] port: must be a port number"),
        ("node", "[server]\nprot = 1\n", "[server] prot: unknown field; known: host"),
        ("node", "[server]\nread_timeout_s = true\n", "[server] read_timeout_s: must be a"),
        ("gate", "[server]\nread_timeout_s = 60\n", "[server] read_timeout_s: 60 s would cut"),
        ("gate", '[server]\nhost = "0.0.0.0"\n', "[server] host = 0.0.0.0 would open the control"),
        ("node", "[server]\nhost = 0\n", "[server] host: must be an IP address, like"),
        ("node", "[server]\nhost = true\n", "[server] host: must be an IP address, like"),
        ("node", "[servr]\n", "[servr]: unknown table; known: [dht], [server]"),
        ("node", "[relay]\ncircuits = 2\n", "[relay] is read by p2psched gate, not by p2psched"),
        ("gate", "[worker]\nslots = 1\n", "[worker] is read by p2psched worker join"),
        ("node", '[database]\npath = "no/such/dir/x.db"\n', "[database] path: "),
        ("node", "[models.m]\nvram_gb = 0\n", "[models.m] vram_gb: must be greater than 0"),
        ("node", '[models.m]\ngpu = "4090"\n', "[models.m] gpu: names no GPU family"),
        ("node", '[models."a,b"]\ngpus = 1\n', "[models.a,b]: not a model name a task"),
        ("node", "[models.m]\nmax_output_tokens = 0\n", "[models.m] max_output_tokens: must"),
        ("node", "[server]\nmax_price = -1\n", "[server] max_price: must be a price per task"),
        ("node", '[models.m]\nmax_price = "a lot"\n', "[models.m] max_price: must be a price"),
        ("node", "[models.m]\nmax_price = nan\n", "[models.m] max_price: must be a price"),
        ("worker", "[models.m]\ntimeuot_s = 1\n", "[models.m] timeuot_s: unknown field"),
        ("node", "[reputation]\nmax_disputes = true\n", "[reputation] max_disputes: must be a"),
        ("worker", "[reputation]\nskip_s = -1\n", "[reputation] skip_s: must be seconds"),
        ("worker", "[worker]\nslots = 0\n", "[worker] slots: must be a whole number"),
    ],
)
def test_a_bad_file_is_refused_before_the_node_starts_naming_file_table_and_key(
    tmp_path: Path, role: str, text: str, said: str
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(text)
    command = {"node": ["node"], "gate": ["gate"], "worker": ["worker", "join"]}[role]
    gate = [] if role == "gate" else ["--gate", "127.0.0.1:9"]
    out = p2psched(
        *command, *gate, "--config", str(config), "--data-dir", str(tmp_path / "d"), timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert f"{config}: {said}" in out.stderr, out.stderr
    assert not (tmp_path / "d" / "state.db").exists()  # refused before the node started


def test_reputation_sets_when_the_scheduler_skips_a_worker_and_for_how_long(
    tmp_path: Path,
) -> None:
    config = tmp_path / "node.toml"
    config.write_text("[reputation]\nmax_disputes = 3\nskip_s = 3600\n")
    rules = load_node_config(config, "gate").reputation
    assert (rules.max_disputes, rules.skip_s, rules.max_failed_challenges) == (3, 3600.0, 1)
    assert load_node_config(None, "node").reputation == ReputationRules(1, 604_800.0, 1)
