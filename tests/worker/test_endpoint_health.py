"""A worker's http endpoints as their operator sees them: credentials from its environment or
a key file reach their own server and nothing else (not the ad, the log, a status or a reason),
an endpoint that fails its health check keeps its models out of the ad until it passes, and a
removed Task Instance's model is refused at once. Real processes and real model servers on
loopback."""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from p2psched.identity import Identity
from p2psched.wire.messages import Decline, QuoteReply, Result
from p2psched.worker.config import ConfigError, HttpDriverConfig, load_config
from p2psched.worker.drivers import HttpDriver
from p2psched.worker.endpoint_health import EndpointHealth
from tests.adversarial.test_scheduler_policy import said, scripted
from tests.harness.http_server import JsonHandler, serving
from tests.harness.processes import gate_and_worker, matrix_job, p2psched, submit_json

KEY = "sk-test-7f3a9c1e5b2d4086"  # the key file's
ENV_KEY = "sk-env-0b1c2d3e4f5a6978"  # the environment's, which its server does not take
ORG = "org-secret-5566"


class KeyedServer:
    """An OpenAI-compatible model server that answers only requests carrying
    `Authorization: Bearer <key>` (any, with `key` None), and keeps the headers it was sent."""

    def __init__(self, model: str, key: str | None) -> None:
        self.seen: list[dict[str, str]] = []  # the headers of every request
        self.posted = 0
        outer = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                if self._allowed():
                    self.send_json(200, {"object": "list", "data": [{"id": model}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.posted += 1
                if self._allowed():
                    self.send_json(200, {"choices": [{"text": f"{model} says {body['prompt']}"}]})

            def _allowed(self) -> bool:
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                if key is None or self.headers.get("authorization") == f"Bearer {key}":
                    return True
                self.send_json(401, {"error": {"message": "Incorrect API key provided"}})
                return False

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@contextmanager
def servers(*specs: tuple[str, str | None]) -> Iterator[list[KeyedServer]]:
    started = [KeyedServer(model, key) for model, key in specs]
    try:
        yield started
    finally:
        for s in started:
            s.close()


def worker_api(data: Path) -> httpx.Client:
    """The worker's node's API, as the design documents' client calls it (no token)."""
    deadline = time.monotonic() + 30
    while not (data / "api.json").exists():
        assert time.monotonic() < deadline, "the worker's API did not start"
        time.sleep(0.1)
    url = json.loads((data / "api.json").read_text())["url"]
    return httpx.Client(base_url=url, timeout=60)


def test_credentials_reach_their_endpoint_alone_and_show_nowhere_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCKED_KEY", ENV_KEY)
    monkeypatch.setenv("KEYED_ORG", ORG)
    key_file = tmp_path / "secrets" / "key"
    key_file.parent.mkdir()
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    with servers(("keyed", KEY), ("locked", KEY), ("open", None)) as (keyed, locked, open_):
        config = (
            '[worker]\ndrivers = ["http"]\nmodels = ["keyed", "locked", "open"]\n'
            "[drivers.http.endpoints.keyed]\n"
            f'url = "{keyed.url}/v1"\napi_key_file = "secrets/key"\n'
            'headers_env = { "OpenAI-Organization" = "KEYED_ORG" }\n'
            "[drivers.http.endpoints.locked]\n"
            f'url = "{locked.url}/v1"\napi_key_env = "LOCKED_KEY"\n'
            f'[drivers.http.endpoints]\nopen = "{open_.url}/v1/completions"\n'
        )
        with gate_and_worker(tmp_path, config) as (gate, _, _, proc):
            # Joined: the endpoint whose key its server refuses is not advertised.
            found = p2psched("workers", "--gate", gate, "--json", "--data-dir", str(tmp_path / "a"))
            assert found.returncode == 0, found.stderr
            [ad] = [json.loads(line) for line in found.stdout.splitlines()]
            assert sorted(ad["models"]) == ["keyed", "open"], ad

            job = matrix_job(
                tmp_path, "keyed", "http", "{prompt: hello}", 1, "resources: {model: keyed}\n"
            )
            results = tmp_path / "results"
            done = submit_json(job, gate, results, tmp_path / "s")
            assert done.returncode == 0, done.stdout + done.stderr
            written = "".join(f.read_text() for f in sorted(results.rglob("*")) if f.is_file())
            assert "keyed says hello" in written
            shown = [found.stdout, done.stdout, done.stderr, written]
            tasks = p2psched("tasks", "--json", "--data-dir", str(tmp_path / "s"))
            workers = p2psched("workers", "--json", "--data-dir", str(tmp_path / "w"))
            shown += [tasks.stdout, tasks.stderr, workers.stdout, workers.stderr]
            token = (tmp_path / "w" / "api.token").read_text().strip()
            with worker_api(tmp_path / "w") as api:
                for path in ("/v1/node", "/v1/workers", "/v1/peers", "/metrics"):
                    answer = api.get(path, headers={"authorization": f"Bearer {token}"})
                    assert answer.status_code == 200, path
                    shown.append(answer.text)
                shown.append(api.post("/queue/info", json={}).text)
            proc.terminate()
            _, log = proc.communicate(timeout=20)
    # Each server got its own credentials, and the keyless one none.
    assert keyed.seen and all(h["authorization"] == f"Bearer {KEY}" for h in keyed.seen)
    assert all(h["openai-organization"] == ORG for h in keyed.seen)
    assert locked.seen and all(h["authorization"] == f"Bearer {ENV_KEY}" for h in locked.seen)
    assert open_.seen and not any("authorization" in h for h in open_.seen)
    assert not any("openai-organization" in h for h in [*locked.seen, *open_.seen])
    # The failure is told to the operator, naming where and why ...
    assert f"http endpoint 'locked' ({locked.url}/v1) failed its health check" in log
    assert "GET /v1/models answered HTTP 401 (its credentials were refused)" in log
    # ... and no secret shows anywhere a person or another node can see.
    for text in [*shown, log]:
        for secret in (KEY, ENV_KEY, ORG):
            assert secret not in text


def test_a_failing_endpoints_models_are_refused_and_a_removed_instances_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCKED_KEY", ENV_KEY)
    with servers(("locked", KEY), ("registered", None), ("any", None)) as (locked, ti, anyone):
        config = (
            '[worker]\ndrivers = ["http"]\nmodels = ["locked"]\n'
            "[drivers.http.endpoints.locked]\n"
            f'url = "{locked.url}/v1"\napi_key_env = "LOCKED_KEY"\n'
            # A catch-all, which would serve a removed instance's model if it were asked.
            f'[drivers.http.endpoints]\n"*" = "{anyone.url}/v1"\n'
        )
        with (
            gate_and_worker(tmp_path, config) as (_, address, worker, _),
            worker_api(tmp_path / "w") as api,
        ):
            port = int(ti.url.rsplit(":", 1)[1])
            registered = api.post("/ti/register", json={"host": "127.0.0.1", "port": port})
            ti_uuid = registered.json()["ti_uuid"]
            assert registered.json()["status"] == "success", registered.text

            async def ask() -> tuple[Any, Any, Any]:
                async with scripted(address, worker, Identity.generate()) as scheduler:
                    asked = {"driver": "http"}
                    return (
                        await scheduler.ask(**asked, model="registered"),
                        await scheduler.ask(**asked, model="locked"),
                        await remove_then_ask(scheduler),
                    )

            async def remove_then_ask(scheduler: Any) -> Any:
                removed = await trio.to_thread.run_sync(
                    lambda: api.post("/ti/remove", json={"ti_uuid": ti_uuid}).json()
                )
                assert removed["status"] == "success"
                return await scheduler.ask(driver="http", model="registered")

            served, failing, gone = trio.run(ask)
    assert isinstance(served, QuoteReply)
    assert isinstance(failing, Decline) and not failing.busy
    assert "does not serve model 'locked' now: its model server failed its health check" in (
        said(failing)
    )
    assert locked.url not in said(failing)  # where it is is the operator's to know
    assert isinstance(gone, Decline) and not gone.busy
    assert f"Task Instance {ti_uuid} serving model 'registered' was removed" in said(gone)
    assert anyone.posted == 0  # no task went to the catch-all meanwhile


async def test_a_failing_endpoint_is_checked_again_until_it_passes(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    healthy = False
    asked: list[float] = []

    async def server(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        asked.append(trio.current_time())
        status = b"200 OK" if healthy else b"503 Loading"
        body = b'{"data": [{"id": "m"}]}'
        head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
            status,
            len(body),
        )
        await stream.send_all(head + body)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    driver = HttpDriver(HttpDriverConfig(endpoints={"m": f"http://127.0.0.1:{port}/v1"}))
    health = EndpointHealth(driver)
    changes: list[set[str]] = []

    async def changed() -> None:
        changes.append(health.withheld(["m", "other"]))

    async with driver.open():
        assert await health.check(["m"], ["m"]) is True
        assert health.withheld(["m", "other"]) == {"m"}
        assert "GET /v1/models answered HTTP 503" in health.failing["m"]
        async with trio.open_nursery() as watching:
            watching.start_soon(health.watch, lambda: ["m"], changed)
            await trio.sleep(15 + 30 + 1)  # two more checks, 15 s and then 30 s later
            assert len(asked) == 3 and changes == []
            healthy = True
            await trio.sleep(60)  # the next, 60 s later, passes: the watch ends
    assert changes == [set()] and not health.failing and len(asked) == 4
    assert [round(b - a) for a, b in zip(asked, asked[1:])] == [15, 30, 60]
    assert health.refusal("m") is None


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ('api_key_file = "key"', "{key} is open to group or others (mode 0644); a key file"),
        ('api_key_file = "key"', "chmod 600 {key}"),
        ('api_key_file = "nope"', "api_key_file: cannot read {tmp}/nope (No such file"),
        ('api_key_env = "NO_SUCH_VAR_X"', "the environment variable NO_SUCH_VAR_X is not set"),
        ('api_key_env = "K"\napi_key_file = "key"', "api_key_env or api_key_file, not both"),
        ('headers_env = { "Host" = "K" }', "'Host' is not a header an endpoint may be sent"),
        ('url = "http://me:pw@h/v1"', "must hold no user or password"),
        ('url = "http://models..lan/v1"', "'models..lan' is not a host name"),
    ],
)
def test_credentials_that_cannot_be_had_safely_are_refused_naming_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str, says: str
) -> None:
    monkeypatch.delenv("NO_SUCH_VAR_X", raising=False)
    monkeypatch.setenv("K", KEY)
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0o644)
    config = tmp_path / "worker.toml"
    url = "" if endpoint.startswith("url") else 'url = "http://127.0.0.1:8000/v1"\n'
    config.write_text(
        f'[worker]\ndrivers = ["http"]\n[drivers.http.endpoints.m]\n{url}{endpoint}\n'
    )
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    said_ = str(refused.value)
    assert "[drivers.http] endpoints.m" in said_
    assert says.format(key=key, tmp=tmp_path) in said_ and KEY not in said_
    assert "pw" not in said_


def test_credentials_are_in_no_repr_of_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K", KEY)
    config = tmp_path / "worker.toml"
    config.write_text(
        '[worker]\ndrivers = ["http"]\n[drivers.http.endpoints.m]\n'
        'url = "http://127.0.0.1:8000/v1"\napi_key_env = "K"\n'
    )
    loaded = load_config(config)
    endpoint = loaded.http_driver.endpoints["m"]
    assert endpoint.headers == {"Authorization": f"Bearer {KEY}"}
    shown = [repr(loaded), str(loaded), repr(endpoint), endpoint.model_dump_json()]
    assert not any(KEY in s for s in shown)


class _RevokedKeyHandler(JsonHandler):
    """A model server whose key was revoked after the worker joined: its model list still
    answers, its completions refuse the key quoting the headers it was sent, as some servers'
    and proxies' "Incorrect API key provided: ..." do."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_json(200, {"object": "list", "data": [{"id": "revoked"}]})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        said = f"Incorrect API key provided: {self.headers.get('authorization')}"
        said += f" (organization {self.headers.get('openai-organization')})"
        self.send_json(401, {"error": {"message": said}})


def test_a_model_server_that_quotes_the_credentials_in_its_refusal_leaks_none_to_the_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVOKED_KEY", KEY)
    monkeypatch.setenv("REVOKED_ORG", ORG)
    with serving(_RevokedKeyHandler) as url:
        config = (
            '[worker]\ndrivers = ["http"]\nmodels = ["revoked"]\n'
            "[drivers.http.endpoints.revoked]\n"
            f'url = "{url}/v1"\napi_key_env = "REVOKED_KEY"\n'
            'headers_env = { "OpenAI-Organization" = "REVOKED_ORG" }\n'
        )
        with gate_and_worker(tmp_path, config) as (_, address, worker, proc):

            async def run_one() -> list[Any]:
                # A stranger's scheduler: whatever the worker tells it, it may publish.
                async with scripted(address, worker, Identity.generate()) as stranger:
                    asked = {"driver": "http", "model": "revoked"}
                    quoted = await stranger.ask(**asked)
                    assert isinstance(quoted, QuoteReply), said(quoted)
                    task = {**asked, "id": "job/0", "input": {"prompt": "hi"}, "timeout": 30.0}
                    answers = [await stranger.commit(["job/0"], [task])]
                    while not isinstance(answers[-1], Result):
                        answers.append(await stranger.answer())
                    return answers

            answers = trio.run(run_one)
            proc.terminate()
            _, log = proc.communicate(timeout=20)
    failed = answers[-1]
    assert isinstance(failed, Result) and "HTTP 401" in said(failed), answers
    for text in [repr(answers), said(failed), log]:
        assert KEY not in text and ORG not in text


@pytest.mark.timeout(30)
def test_a_key_file_that_is_a_pipe_is_refused_rather_than_waited_on(tmp_path: Path) -> None:
    key = tmp_path / "key"
    os.mkfifo(key, 0o600)  # nobody writes it: opening it to read would wait for ever
    config = tmp_path / "worker.toml"
    config.write_text(
        '[worker]\ndrivers = ["http"]\n[drivers.http.endpoints.m]\n'
        'url = "http://127.0.0.1:8000/v1"\napi_key_file = "key"\n'
    )
    with pytest.raises(ConfigError, match=f"api_key_file: {key} is not a plain file"):
        load_config(config)
