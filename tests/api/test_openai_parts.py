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
from p2psched.node.snapshots import ServedModel, TaskOutcome


class _Facade:
    """A node whose one worker for `evil` sends `parts`, then completes the task."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    async def served_models(self) -> list[ServedModel]:
        return [ServedModel("evil", 1)]

    @asynccontextmanager
    async def model_task(
        self, model: str, task_input: dict[str, Any], *, timeout_s: float, retries: int
    ) -> AsyncIterator[tuple[trio.MemoryReceiveChannel[Any], Any]]:
        send, receive = trio.open_memory_channel[Any](len(self.parts))
        for part in self.parts:
            send.send_nowait(part)
        send.close()
        yield receive, lambda: TaskOutcome("t", "completed", [], None, 1)


async def test_a_part_that_is_not_json_ends_the_stream_with_an_error_not_silently() -> None:
    """MessagePack can carry what JSON cannot (bytes): a worker's part of bytes made the
    stream's generator raise, and the client saw a clean end after the text before it (no
    error, no [DONE]): a truncated answer taken for a whole one."""
    app = FastAPI()
    openai.install(app, _Facade([{"choices": [{"delta": {"content": "before "}}]}, {"b": b"x"}]))
    body = {"model": "evil", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        said = (await client.post("/v1/chat/completions", json=body)).text
    events = [line[6:] for line in said.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", said
    assert "error" in json.loads(events[-2]), said
