"""The OpenAI-compatible gateway on a real devnet (a gate, two workers whose http driver
points at the devnet's test model server, and a plain node), driven by the official `openai`
client: models, chat and completions plain and streamed (the stream adds up to the plain
answer, and the worker's receipt covers all of it), and errors in OpenAI's shape."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from p2psched.node.config import GATEWAY_MAX_BYTES as MAX_REQUEST_BYTES
from p2psched.scheduler.jobs import KEEP_EPHEMERAL
from p2psched.wire.channel import MAX_CHANNELS_PER_IP
from p2psched.wire.codec import encode
from tests.harness.devnet import running_devnet
from tests.harness.http_server import JsonHandler
from tests.harness.processes import gate_and_worker, running_node

MODEL = "llama-3-8b"  # the first devnet worker's (and the first one's only)
ASK = [{"role": "user", "content": "tell me about peer to peer scheduling"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The node's API base URL and its token."""
    folder = tmp_path_factory.mktemp("gateway")
    with running_devnet(folder / "net", 2) as net, running_node(net.gate, folder / "node") as data:
        url = json.loads((data / "api.json").read_text())["url"]
        yield url, (data / "api.token").read_text().strip()


@pytest.fixture(scope="module")
def client(gateway: tuple[str, str]) -> Iterator[openai.OpenAI]:
    url, token = gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=60) as c:
        yield c


def test_models_lists_what_the_workers_serve(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"llama-3-8b", "llama-3-70b"}
    assert models[MODEL].object == "model" and models[MODEL].owned_by == "p2psched"
    assert client.models.retrieve(MODEL).id == MODEL


def test_a_chat_completion_plain_and_streamed_says_the_same(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=ASK)  # type: ignore[arg-type]
    said = plain.choices[0].message.content
    assert said == "echo: tell me about peer to peer scheduling"
    assert plain.object == "chat.completion" and plain.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model=MODEL, messages=ASK, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert len(chunks) > 3  # a word a chunk, as they came
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == said
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_completion_plain_and_streamed(client: openai.OpenAI) -> None:
    plain = client.completions.create(model=MODEL, prompt="one two three", max_tokens=2)
    assert plain.choices[0].text == "echo: one two"
    streamed = client.completions.create(model=MODEL, prompt="one two three", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == "echo: one two three"


def test_n_choices_and_a_streams_usage_come_through_as_openai_gives_them(
    client: openai.OpenAI,
) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=ASK, n=3)  # type: ignore[arg-type]
    assert [c.index for c in plain.choices] == [0, 1, 2]
    said = "echo: tell me about peer to peer scheduling"
    assert all(c.message.content == said for c in plain.choices)
    assert plain.usage is not None and plain.usage.completion_tokens == 3 * 8
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    for i in (0, 1):
        text = "".join(
            c.choices[0].delta.content or ""
            for c in chunks
            if c.choices and c.choices[0].index == i
        )
        assert text == said
    *before, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == {
        "prompt_tokens": 7,
        "completion_tokens": 16,
        "total_tokens": 23,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    }
    assert all(c.usage is None for c in before)
    completion = client.completions.create(
        model=MODEL, prompt="a b", stream=True, stream_options={"include_usage": True}
    )
    *texts, usage = list(completion)
    assert "".join(c.choices[0].text for c in texts) == "echo: a b"
    assert usage.usage is not None and usage.usage.total_tokens == 2 + 3


def test_the_streamed_answer_is_one_task_whose_receipt_covers_every_chunk(
    client: openai.OpenAI, gateway: tuple[str, str]
) -> None:
    url, token = gateway
    ask = [{"role": "user", "content": "receipts cover streams"}]
    stream = client.chat.completions.create(model=MODEL, messages=ask, stream=True)  # type: ignore[arg-type]
    chunks = [c.model_dump() for c in stream]
    ours = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}) as api:
        for job in api.get("/v1/jobs", params={"gateway": True}).json()["jobs"]:
            [result] = api.get(f"/v1/jobs/{job['job']}/results").json()["results"]
            output = result["output"]
            if isinstance(output, list) and output[-1]["id"] == chunks[-1]["id"]:
                ours.append(result)
    [result] = ours
    assert result["state"] == "completed"
    assert [c["choices"][0]["delta"].get("content") for c in result["output"]] == [
        c["choices"][0]["delta"]["content"] for c in chunks
    ]
    digest = hashlib.sha256(encode(result["output"])).hexdigest()
    assert result["receipt"]["result_hash"] == digest and result["receipt"]["ok"]
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}) as api:
        metrics = api.get("/metrics").text
    series = 'p2psched_partial_results_total{outcome="passed"}'
    [passed] = [line for line in metrics.splitlines() if line.startswith(series)]
    assert float(passed.split()[-1]) >= len(chunks)  # (and those of the other streams)


def test_gateway_requests_are_kept_apart_from_other_jobs_and_bounded(
    client: openai.OpenAI, gateway: tuple[str, str]
) -> None:
    """A busy gateway neither pushes the node's other jobs off `/v1/jobs` nor grows its
    memory: its requests are listed only with `gateway=true`, the newest KEEP_EPHEMERAL
    finished ones; what they paid stays in the ledger, every signature good."""
    url, token = gateway
    with httpx.Client(base_url=url, headers=auth(token), timeout=30) as api:
        spec = {"name": "batch-job", "driver": "echo", "tasks": [{"input": {"n": 1}}]}
        batch = api.post("/v1/jobs", json={"spec": spec}).json()["job"]
        client.chat.completions.create(model=MODEL, messages=ASK)  # type: ignore[arg-type]
        first = api.get("/v1/jobs", params={"gateway": True}).json()["jobs"][0]  # (newest)
        for _ in range(KEEP_EPHEMERAL):
            client.chat.completions.create(model=MODEL, messages=ASK)  # type: ignore[arg-type]
        listed = api.get("/v1/jobs", params={"limit": 1}).json()["jobs"]
        assert [j["job"] for j in listed] == [batch]
        requests = api.get("/v1/jobs", params={"gateway": True, "limit": 1000}).json()["jobs"]
        assert len(requests) == KEEP_EPHEMERAL
        assert all(j["state"] == "completed" for j in requests)
        assert first["job"] not in {j["job"] for j in requests}
        assert api.get(f"/v1/jobs/{first['job']}").status_code == 404
        others = {j["job"] for j in api.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]}
        assert not others & {j["job"] for j in requests}
        ledger = api.get("/v1/ledger", params={"verify": True}).json()
        paid = {j["job"] for j in ledger["jobs"] if j["tasks_paid"] == 1}
        assert first["job"] in paid and {j["job"] for j in requests} <= paid
        assert ledger["problems"] == []


def negotiations(api: httpx.Client) -> dict[str, float]:
    """The node's `p2psched_negotiations_total` by outcome."""
    series = re.findall(
        r'^p2psched_negotiations_total\{outcome="(\w+)"\} (\S+)$', api.get("/metrics").text, re.M
    )
    return {outcome: float(n) for outcome, n in series}


def test_a_stream_of_requests_asks_a_worker_for_a_quote_once(
    client: openai.OpenAI, gateway: tuple[str, str]
) -> None:
    """The worker's quote to one request stands for the next ones of its kind (a quote is
    used 30 s at most): each request's job still sends its own signed commitment, and has
    its own receipt verified."""
    url, token = gateway
    with httpx.Client(base_url=url, headers=auth(token)) as api:
        client.chat.completions.create(model=MODEL, messages=ASK)  # type: ignore[arg-type]
        before = negotiations(api)
        for _ in range(10):
            client.chat.completions.create(model=MODEL, messages=ASK)  # type: ignore[arg-type]
        after = negotiations(api)
        assert after["commit"] - before["commit"] == 10
        assert after["lease"] - before["lease"] == 10
        assert after["asked"] - before["asked"] <= 1  # (the standing quote may have expired)
        assert api.get("/v1/ledger", params={"verify": True}).json()["problems"] == []


def test_a_busy_gateway_holds_one_channel_per_worker(gateway: tuple[str, str]) -> None:
    """More requests at once than a worker takes channels from one address (64): each is a
    task on the one link per worker the node's jobs share, so none is refused for it."""
    url, token = gateway
    at_once = MAX_CHANNELS_PER_IP + 16
    answers: list[int] = []
    start = threading.Barrier(at_once)

    def ask() -> None:
        with httpx.Client(base_url=url, headers=auth(token), timeout=60) as api:
            start.wait()
            body = {"model": MODEL, "messages": ASK}
            answers.append(api.post("/v1/chat/completions", json=body).status_code)

    threads = [threading.Thread(target=ask) for _ in range(at_once)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert answers == [200] * at_once
    with httpx.Client(base_url=url, headers=auth(token)) as api:
        metrics = api.get("/metrics").text
    [connected] = [x for x in metrics.splitlines() if x.startswith("p2psched_workers_connected ")]
    assert float(connected.split()[-1]) <= 2  # the devnet's two workers, a link each


def test_an_unknown_model_is_not_found_naming_the_known_ones(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-5", messages=ASK)  # type: ignore[arg-type]
    error = e.value.body
    assert isinstance(error, dict)
    assert "'gpt-5'" in error["message"] and "llama-3-8b" in error["message"]
    assert error["code"] == "model_not_found" and error["param"] == "model"


def test_a_wrong_key_is_refused(gateway: tuple[str, str]) -> None:
    url, _ = gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as e:
            wrong.models.list()
    assert isinstance(e.value.body, dict) and "api.token" in e.value.body["message"]


def test_a_bad_body_is_refused_naming_the_field(
    client: openai.OpenAI, gateway: tuple[str, str]
) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[])
    assert isinstance(e.value.body, dict) and e.value.body["param"] == "messages"
    url, token = gateway
    big = {"model": MODEL, "prompt": "x" * MAX_REQUEST_BYTES}
    r = httpx.post(f"{url}/v1/completions", json=big, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    deep = b'{"model": "m", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = httpx.post(f"{url}/v1/chat/completions", content=deep, headers=auth(token))
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "more", "param", "said"),
    [
        ("/v1/chat/completions", {"n": 129}, "n", "'n' must be a whole number, 1..128, not 129"),
        ("/v1/chat/completions", {"n": 0}, "n", "1..128, not 0"),
        ("/v1/chat/completions", {"n": True}, "n", "1..128, not True"),
        ("/v1/completions", {"n": 1000}, "n", "1..128, not 1000"),
        ("/v1/completions", {"best_of": 21}, "best_of", "1..20, not 21"),
        ("/v1/completions", {"n": 3, "best_of": 2}, "best_of", "at least 'n' (3), not 2"),
    ],
)
def test_too_many_answers_are_refused_naming_the_field(
    gateway: tuple[str, str], path: str, more: dict[str, Any], param: str, said: str
) -> None:
    """However many answers a request asks for, its worker writes each: `n` (and
    /v1/completions' `best_of`) are bounded as OpenAI bounds them, model config or not."""
    url, token = gateway
    ask = {"model": MODEL, "messages": ASK, "prompt": "a b", **more}
    r = httpx.post(f"{url}{path}", json=ask, headers=auth(token), timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and said in error["message"], error


def test_a_wrong_method_on_a_gateway_path_is_answered_in_openais_shape(
    gateway: tuple[str, str],
) -> None:
    url, token = gateway
    r = httpx.get(f"{url}/v1/chat/completions", headers=auth(token))
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["message"] == "GET is not allowed on /v1/chat/completions (use POST)"


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def gateway_serving(folder: Path, model: str) -> tuple[str, str]:
    """The gateway of `gate_and_worker(folder, ...)`'s gate (its URL and key), once its API
    answers and its models list `model` (within 60 s for both: on a loaded machine the gate
    and worker start, the endpoint is checked and the ad spreads in that time)."""
    endpoint = folder / "g" / "api.json"
    deadline = time.monotonic() + 60
    while not endpoint.exists():
        assert time.monotonic() < deadline, "the gate's API did not start"
        time.sleep(0.1)
    url = json.loads(endpoint.read_text())["url"]
    key = (folder / "g" / "api.token").read_text().strip()
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as c:
        while model not in [m.id for m in c.models.list()]:
            assert time.monotonic() < deadline, "the worker's ad did not show"
            time.sleep(0.2)
    return url, key


def test_a_stream_whose_model_server_fails_ends_with_an_error_in_openais_shape(
    tmp_path: Path,
) -> None:
    """A worker whose endpoint passed its health check and then answers no completion: the
    stream is not tried elsewhere (its client may have seen part of it), and ends with the
    worker's reason, which the client raises."""
    with unanswering_model_server("dead-model", hang_up=True) as port:
        config = (
            '[worker]\ndrivers = ["http"]\nmodels = ["dead-model"]\n'
            f'[drivers.http]\nendpoints = {{ "dead-model" = "http://127.0.0.1:{port}/v1" }}\n'
        )
        with gate_and_worker(tmp_path, config):
            url, key = gateway_serving(tmp_path, "dead-model")
            with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60) as c:
                with pytest.raises(openai.APIError) as e:
                    asked = c.chat.completions.create(
                        model="dead-model",
                        messages=ASK,  # type: ignore[arg-type]
                        stream=True,
                    )
                    list(asked)
    assert isinstance(e.value.body, dict) and e.value.body["code"] == "worker_failed"
    assert "no answer from the model server" in e.value.message


@contextmanager
def unanswering_model_server(model: str, *, hang_up: bool) -> Iterator[int]:
    """A model server on loopback that lists `model` (so it passes the worker's health check)
    and answers no completion: it hangs up on each (`hang_up`), or holds each unanswered until
    it stops. The port it listens on."""
    stop = threading.Event()

    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            self.send_json(200, {"object": "list", "data": [{"id": model}]})

        def do_POST(self) -> None:  # noqa: N802
            if not hang_up:
                stop.wait()
            self.close_connection = True  # (no answer at all)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_a_plain_request_whose_client_hangs_up_has_its_task_cancelled(tmp_path: Path) -> None:
    """The README: "A client that hangs up has its task cancelled". A plain (not streamed)
    request's handler does not hear its client leave: its task runs on, holding the worker's
    slot until the model server answers or 120 s pass (and an OpenAI client that retries on
    its timeout starts another one each time)."""
    with unanswering_model_server("slow-model", hang_up=False) as port:
        config = (
            '[worker]\ndrivers = ["http"]\nmodels = ["slow-model"]\n'
            f'[drivers.http]\nendpoints = {{ "slow-model" = "http://127.0.0.1:{port}/v1" }}\n'
        )
        with gate_and_worker(tmp_path, config):
            url, key = gateway_serving(tmp_path, "slow-model")
            ask = {"model": "slow-model", "messages": ASK}
            with pytest.raises(httpx.ReadTimeout):  # the client gives up, and leaves
                httpx.post(f"{url}/v1/chat/completions", json=ask, headers=auth(key), timeout=3)
            deadline = time.monotonic() + 15
            while True:
                [job] = httpx.get(
                    f"{url}/v1/jobs", params={"gateway": True}, headers=auth(key)
                ).json()["jobs"]
                if job["state"] == "cancelled":
                    break
                assert time.monotonic() < deadline, f"its task runs on: {job['counts']}"
                time.sleep(0.5)


def test_a_greedy_worker_is_not_used_and_the_refusal_names_the_price_cap(tmp_path: Path) -> None:
    """The only worker serving a model asks a million a task: a gateway request (and the
    design documents' /queue/submit and /api/v1/tasks) may pay at most [server] max_price,
    0.1 by default, so the worker is never committed to nor paid, and the answer names the cap
    and the cheapest ask."""
    config = (
        '[worker]\ndrivers = ["http"]\nmodels = ["greedy-model"]\nmin_price = 1000000\n'
        '[drivers.http]\nendpoints = { "*" = "http://127.0.0.1:9/v1" }\n'
    )
    with unanswering_model_server("greedy-model", hang_up=True) as port:
        config = config.replace("127.0.0.1:9", f"127.0.0.1:{port}")
        with gate_and_worker(tmp_path, config):
            url, key = gateway_serving(tmp_path, "greedy-model")
            ask = {"model": "greedy-model", "messages": ASK}
            with httpx.Client(base_url=url, headers=auth(key), timeout=60) as api:
                chat = api.post("/v1/chat/completions", json=ask)
                streamed = api.post("/v1/chat/completions", json={**ask, "stream": True})
                queued = api.post(
                    "/v1/queue/submit", json={"model_name": "greedy-model", "task_input": {}}
                )
                rest = api.post("/api/v1/tasks", json={"model": "greedy-model", "input": {}})
                jobs = [
                    *api.get("/v1/jobs", params={"gateway": True}).json()["jobs"],
                    *api.get("/v1/jobs").json()["jobs"],
                ]
                ledger = api.get("/v1/ledger").json()
    assert chat.status_code == 503, chat.text
    error = chat.json()["error"]
    assert error["code"] == "over_price_cap" and error["type"] == "server_error", error
    assert "price cap of 0.1" in error["message"] and "asks 1e+06" in error["message"]
    assert "data: [DONE]" in streamed.text and "price cap of 0.1" in streamed.text
    for refused in (queued, rest):
        assert refused.status_code == 503, refused.text
        assert "price cap of 0.1" in refused.json()["message"], refused.text
    assert jobs == [], jobs  # (no task was made, so none was committed to it)
    assert ledger["spent"] == 0 and ledger["jobs"] == [] and ledger["peers"] == [], ledger
