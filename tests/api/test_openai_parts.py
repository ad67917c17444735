"""The gateway's stream of a worker's parts, on a node facade that hands it parts a hostile
worker could send: whatever they hold, the client hears how the stream ended."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from fastapi import FastAPI

from p2psched.api import openai
from p2psched.node.config import ServerTable
from p2psched.node.snapshots import ServedModel, TaskOutcome


class _Facade:
    """A node whose one worker for `evil` sends `parts`, then completes the task."""

    def __init__(self, parts: list[Any], ended: TaskOutcome | None = None) -> None:
        self.parts = parts
        self.ended = ended or TaskOutcome("t", "completed", parts, None, 1)

    async def served_models(self) -> list[ServedModel]:
        return [ServedModel("evil", 1)]

    def model_requirements(self, model: str) -> None:
        return None  # (a node whose config says nothing of its models)

    @asynccontextmanager
    async def model_task(
        self, model: str, task_input: dict[str, Any], *, timeout_s: float, retries: int
    ) -> AsyncIterator[tuple[trio.MemoryReceiveChannel[Any], Any]]:
        send, receive = trio.open_memory_channel[Any](len(self.parts))
        for part in self.parts:
            send.send_nowait(part)
        send.close()
        yield receive, lambda: self.ended


async def test_a_part_that_is_not_json_ends_the_stream_with_an_error_not_silently() -> None:
    """MessagePack can carry what JSON cannot (bytes): a worker's part of bytes made the
    stream's generator raise, and the client saw a clean end after the text before it (no
    error, no [DONE]): a truncated answer taken for a whole one."""
    said = await streamed(_Facade([BEFORE, {"b": b"x"}]))
    events = [line[6:] for line in said.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", said
    assert "error" in json.loads(events[-2]), said


BEFORE = {"choices": [{"delta": {"content": "before "}}]}


async def streamed(facade: _Facade) -> str:
    app = FastAPI()
    openai.install(app, facade, ServerTable())
    body = {"model": "evil", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        return (await client.post("/v1/chat/completions", json=body)).text


def events_of(said: str) -> list[Any]:
    """The stream's events (JSON), and its last one ("[DONE]")."""
    data = [line[6:] for line in said.split("\n\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]", said
    return [json.loads(d) for d in data[:-1]]


async def test_parts_that_are_not_chunks_are_not_passed_on() -> None:
    """A worker's part that is not a JSON object (42, a string, a list), or that is an error
    event (which a client would take for the node's), ends the stream with the node's error."""
    for part in (42, "text", [1, 2], None, {"error": {"message": "made up"}}):
        *shown, last = events_of(await streamed(_Facade([BEFORE, part])))
        assert shown == [BEFORE]
        assert last["error"]["code"] == "worker_failed"
        assert "not an answer's chunk" in last["error"]["message"]


async def test_a_stream_its_result_does_not_cover_ends_with_an_error() -> None:
    """Once its task completed, a stream ends clean only if the result holds the parts it
    passed on; and a stream cut before its task ended (its client too slow) says why."""
    short = TaskOutcome("t", "completed", [], None, 1)
    *shown, last = events_of(await streamed(_Facade([BEFORE], short)))
    assert shown == [BEFORE] and last["error"]["code"] == "worker_failed"
    assert "its answer is not the parts it streamed" in last["error"]["message"]
    cut = TaskOutcome("t", "running", None, "its client read too slowly", 0, final=False)
    *shown, last = events_of(await streamed(_Facade([BEFORE], cut)))
    assert last["error"]["message"] == "the stream was ended: its client read too slowly"
    (*shown,) = events_of(await streamed(_Facade([BEFORE, BEFORE])))
    assert shown == [BEFORE, BEFORE]  # (its result is those two: a clean end)
