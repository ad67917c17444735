"""The devnet's test model server as its own process on loopback: OpenAI's shapes, the same
answer to the same request, and a clear refusal of what it does not take."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psched.devnet_model import MAX_BODY_BYTES
from tests.harness.processes import EXE


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port_file = tmp_path / "port.json"
    with subprocess.Popen([*EXE, "devnet", "serve-model", "--port-file", str(port_file)]) as p:
        try:
            for _ in range(600):
                if port_file.exists() or p.poll() is not None:
                    break
                time.sleep(0.05)
            yield f"http://127.0.0.1:{json.loads(port_file.read_text())['port']}"
        finally:
            p.kill()


def _post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_completions_and_chat_answer_in_openais_shape_deterministically(server: str) -> None:
    body = json.dumps({"model": "llama-3-8b", "prompt": "one two three", "max_tokens": 2})
    status, first = _post(server + "/v1/completions", body.encode())
    assert status == 200 and first["object"] == "text_completion"
    assert first["choices"] == [
        {"index": 0, "text": "echo: one two", "logprobs": None, "finish_reason": "stop"}
    ]
    assert first["model"] == "llama-3-8b"
    assert _post(server + "/v1/completions", body.encode()) == (200, first)
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi there"}]}
    status, answer = _post(server + "/v1/chat/completions", json.dumps(chat).encode())
    assert status == 200 and answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "echo: hi there"}  # type: ignore[index]


def test_what_it_does_not_take_is_refused_with_a_reason(server: str) -> None:
    status, answer = _post(server + "/v1/completions", b"{not json")
    assert status == 400 and "not JSON" in answer["error"]["message"]  # type: ignore[index]
    status, answer = _post(server + "/v1/completions", b" " * (MAX_BODY_BYTES + 1))
    assert status == 400 and "at most" in answer["error"]["message"]  # type: ignore[index]
    status, answer = _post(server + "/v1/chat/completions", b'{"messages": []}')
    assert status == 400 and "messages" in answer["error"]["message"]  # type: ignore[index]
    status, answer = _post(server + "/v1/embeddings", b"{}")
    assert status == 404 and "no such endpoint" in answer["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "body", "text_of"),
    [
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "say three words"}]},
            lambda c: c["choices"][0]["delta"].get("content", ""),
        ),
        (
            "/v1/completions",
            {"model": "m", "prompt": "say three words"},
            lambda c: c["choices"][0]["text"],
        ),
    ],
)
def test_a_stream_comes_as_server_sent_events_that_add_up_to_the_plain_answer(
    server: str, path: str, body: dict[str, Any], text_of: Callable[[Any], str]
) -> None:
    _, plain = _post(server + path, json.dumps(body).encode())
    request = urllib.request.Request(
        server + path,
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["content-type"] == "text/event-stream"
        lines = answer.read().decode().split("\n\n")
    assert lines[-2:] == ["data: [DONE]", ""]
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-2]]
    assert len(events) > 3  # a word a chunk
    plain_choice = plain["choices"][0]  # type: ignore[index]
    said = plain_choice["message"]["content"] if "message" in plain_choice else plain_choice["text"]
    assert "".join(text_of(e) for e in events) == said == "echo: say three words"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_it_lists_its_model_and_says_it_is_healthy(server: str) -> None:
    with urllib.request.urlopen(server + "/v1/models", timeout=10) as answer:
        assert json.loads(answer.read())["data"][0]["id"] == "devnet-test-model"
    with urllib.request.urlopen(server + "/health", timeout=10) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server + "/v1/nothing", timeout=10).close()
    with missing.value:
        assert missing.value.code == 404


@pytest.mark.parametrize(
    ("asked", "says"),
    [
        ({"n": 0}, "'n' must be a whole number 1..128, not 0"),
        ({"n": True}, "'n' must be a whole number 1..128, not True"),
        ({"stream_options": {"include_usage": True}}, "only allowed when 'stream' is true"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "must be an object like"),
    ],
)
def test_choices_and_stream_options_out_of_openais_range_are_refused(
    server: str, asked: dict[str, Any], says: str
) -> None:
    body = json.dumps({"model": "m", "prompt": "p", **asked}).encode()
    status, answer = _post(server + "/v1/completions", body)
    assert status == 400 and says in answer["error"]["message"]  # type: ignore[index]
