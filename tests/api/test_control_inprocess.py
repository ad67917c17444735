"""The control API in one process, over real loopback sockets: what needs the node's insides
to set up (a job no longer kept in memory, a forged Host header, a cut-short token file), and
that its OpenAPI document describes every answer (errors too)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched.api.control import api_token
from p2psched.api.endpoint import TOKEN_FILE
from p2psched.scheduler.job import parse_job
from tests.harness.metrics import scraper
from tests.harness.network import echo_job, relayed_network


async def test_a_task_of_a_job_no_longer_in_memory_is_answered_from_the_store(
    tmp_path: Path,
) -> None:
    async with relayed_network(tmp_path, workers=1) as (scheduler, _, _):
        job = scheduler.jobs.submit(parse_job(echo_job(2)))
        with trio.fail_after(30):
            await job.done.wait()
        del scheduler.jobs.jobs[job.job_id]  # as the node does once 100 newer jobs ended
        async with scraper(scheduler) as http:
            got = (await http.get("/v1/task/query", params={"task_id": f"{job.job_id}/1"})).json()
            assert got["task_status"] == "completed" and got["result"] == {"n": 1}
            assert len(got["scheduled_ti"]) == 64 and got["submit_time"] == job.submitted_at
            gone = await http.get("/v1/task/query", params={"task_id": f"{job.job_id}/7"})
            assert gone.status_code == 404


async def test_a_forged_host_header_does_not_skip_the_token(tmp_path: Path) -> None:
    async with relayed_network(tmp_path, workers=0) as (scheduler, _, _):
        async with scraper(scheduler) as http:
            for host in ("x/ui?", "x/docs?", "x/openapi.json?"):
                r = await http.get("/v1/node", headers={"host": host, "authorization": ""})
                assert r.status_code in (400, 401), (host, r.status_code)
                if r.status_code == 401:
                    assert str(scheduler.data_dir) not in r.text  # no path given away


async def test_the_openapi_document_describes_every_answer(tmp_path: Path) -> None:
    async with relayed_network(tmp_path, workers=0) as (scheduler, _, _):
        async with scraper(scheduler) as http:
            schema = (await http.get("/openapi.json")).json()
    errors = schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                where = (method, path, status)
                if status.startswith("2") and path == "/metrics":
                    assert set(answer["content"]) == {"text/plain"}, where
                elif status.startswith("2") and path.endswith("/output"):  # a task's, as hashed
                    assert set(answer["content"]) == {"application/msgpack"}, where
                elif status.startswith("2"):  # a model of its own, or a list of one
                    described = answer["content"]["application/json"]["schema"]
                    assert "$ref" in described or "$ref" in described["items"], where
                else:  # {status: "error", message}, with the fields its route adds
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    said = errors[ref.removeprefix("#/components/schemas/")]["properties"]
                    assert said["status"]["const"] == "error" and "message" in said, where
                    if status == "401":  # (the token's, before any route)
                        assert ref == "#/components/schemas/ErrorAnswer", where
            assert "401" in operation["responses"], (method, path)


def test_a_token_file_cut_short_is_replaced_and_kept_private(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).write_text("")  # a crash between create and write
    token = api_token(tmp_path)
    assert len(token) >= 32 and api_token(tmp_path) == token
    os.chmod(tmp_path / TOKEN_FILE, 0o644)
    assert api_token(tmp_path) == token
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600


# (httpx's own upload generator is dropped unfinished when the server refuses it part way)
@pytest.mark.filterwarnings("ignore:Async generator 'httpx:ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_design_document_path_reads_a_bounded_body(tmp_path: Path) -> None:
    """A body over `MAX_BODY_BYTES` is refused (413) whether it says its length or not, and
    an unknown name is not sent back whole."""
    from p2psched.api.scheduler_api import MAX_BODY_BYTES

    big = b'{"name": "' + b"a" * MAX_BODY_BYTES + b'"}'

    async def chunks() -> Any:
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    async with relayed_network(tmp_path, workers=0) as (scheduler, _, _):
        async with scraper(scheduler) as http:
            told = await http.post("/scheduler/set", content=big)
            assert told.status_code == 413, told.text[:200]
            untold = await http.post("/scheduler/set", content=chunks())  # (chunked)
            assert untold.status_code == 413, untold.text[:200]
            long = await http.post("/scheduler/set", json={"name": "a" * 100_000})
            assert long.json()["status"] == "error" and len(long.content) < 1000
