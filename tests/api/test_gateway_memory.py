"""What a node keeps of the OpenAI gateway's finished requests, whose answers a worker (a
stranger) makes as large as a result may be: their count, and their outputs' bytes in all,
stay bounded. Real nodes in this process, a real model server on loopback."""

from __future__ import annotations

from pathlib import Path

import trio

from p2psched.node.status import NodeFacade
from p2psched.scheduler.jobs import KEEP_EPHEMERAL_BYTES
from p2psched.worker.config import HttpDriverConfig, WorkerConfig
from tests.harness.http_server import JsonHandler, serving
from tests.harness.network import network

ANSWER_BYTES = 3 << 20  # under the http driver's default max_response_bytes (4 MiB)


class LargeAnswers(JsonHandler):
    """A model server whose every completion is ANSWER_BYTES of text."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_json(200, {"object": "list", "data": [{"id": "big"}]})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        self.send_json(200, {"choices": [{"text": "x" * ANSWER_BYTES}]})


async def test_finished_gateway_requests_keep_a_bounded_total_of_output(tmp_path: Path) -> None:
    requests = KEEP_EPHEMERAL_BYTES // ANSWER_BYTES + 3
    with serving(LargeAnswers) as url:
        config = WorkerConfig(
            drivers=("http",),
            models=("big",),
            http_driver=HttpDriverConfig(endpoints={"big": f"{url}/v1"}),
        )
        async with network(tmp_path, [config]) as (scheduler, _):
            view = NodeFacade(scheduler)
            with trio.fail_after(60):
                while not await view.served_models():
                    await trio.sleep(0.2)
            for _ in range(requests):
                async with view.model_task("big", {"prompt": "hi"}, timeout_s=60, retries=0) as (
                    parts,
                    outcome,
                ):
                    async for _ in parts:
                        pass
                    assert outcome().state == "completed", outcome()
            with trio.fail_after(30):  # (the last one's job ends as its request does)
                kept = view.jobs(1000, gateway=True)
                while any(j.state != "completed" for j in kept):
                    await trio.sleep(0.05)
                    kept = view.jobs(1000, gateway=True)
    # Each answer is over a third of the bytes kept in all: at most that many stay.
    assert len(kept) <= KEEP_EPHEMERAL_BYTES // ANSWER_BYTES < requests
