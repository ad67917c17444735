"""The predictor as a client and an operator see it, against a devnet's real processes: the
tokens a task's metadata tells (through /queue/submit) or its OpenAI request asks (through the
gateway) reach the scheduler's token fit with the run time the worker measured, and /queue/info
answers from it; a lookup table loaded through the Scheduler API and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from p2psched import devnet
from p2psched.resources.instance import instance_id
from tests.api.test_design_api import ModelServer, client, post, wait_for
from tests.harness.devnet import running_devnet
from tests.harness.processes import p2psched

SUBMITTED = "fit-by-metadata"  # tasks through /queue/submit, their size told by metadata only
ASKED = "fit-by-request"  # requests through the gateway, their size asked by max_tokens
BASE_S, PER_TOKEN_S = 0.05, 0.001  # how long the server takes: BASE_S + PER_TOKEN_S · tokens


def timed(body: dict[str, Any]) -> dict[str, Any]:
    """A model server's answer after a time linear in the tokens it is to produce: `n_out`
    for a completion (a field only this server reads, so only the metadata tells the
    scheduler), `max_tokens` for a chat request."""
    tokens = body["max_tokens"] if "messages" in body else body["n_out"]
    time.sleep(BASE_S + PER_TOKEN_S * tokens)
    message = {"role": "assistant", "content": "ok"}
    return {"object": "chat.completion", "choices": [{"message": message}]}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.Devnet]:
    """A devnet whose worker serves both models from a server that answers in `timed`."""
    with ModelServer(models=(SUBMITTED, ASKED), answer=timed) as server:
        with running_devnet(tmp_path_factory.mktemp("prednet"), 1) as started:
            with client(started.folder / "worker-0") as w:
                registered = post(w, "/ti/register", {"host": "127.0.0.1", "port": server.port})
                assert registered["status"] == "success", registered
            yield started


def worker_id(net: devnet.Devnet) -> bytes:
    return bytes.fromhex(json.loads((net.folder / "worker-0" / "api.json").read_text())["node_id"])


def token(data: Path) -> str:
    return (data / "api.token").read_text().strip()


def queue(http: httpx.Client, model: str, **metadata: int) -> dict[str, Any]:
    """The one instance of `model` as /queue/info shows it, for a task of `metadata`."""
    answer = post(http, "/queue/info", {"model_name": model, "metadata": metadata})
    assert answer["status"] == "success", answer
    (only,) = answer["queues"]
    return only


OUTPUTS = [0, 600, 100, 500, 200, 400, 300, 50, 550, 150, 450, 250]  # 12 > MIN_FIT_SAMPLES


def test_metadata_given_to_queue_submit_teaches_the_fit_that_queue_info_answers_from(
    net: devnet.Devnet,
) -> None:
    with client(net.folder / "gate") as g:
        before = queue(g, SUBMITTED, input_tokens=10, output_tokens=500)
        assert before["predicted_from"] != "fitted"
        tasks = []
        for n in OUTPUTS:
            asked = {
                "model_name": SUBMITTED,
                "task_input": {"prompt": "count", "n_out": n},
                "metadata": {"input_tokens": 10, "output_tokens": n, "hardware": "A100"},
            }
            placed = post(g, "/queue/submit", asked)
            assert placed["status"] == "success", placed
            tasks.append(placed["task_id"])

        def all_done() -> bool:
            states = [post(g, "/task/query", {"task_id": t})["task_status"] for t in tasks]
            assert "failed" not in states, states
            return all(s == "completed" for s in states)

        wait_for(all_done, "the submitted tasks", timeout=120)
        long, short = (queue(g, SUBMITTED, input_tokens=10, output_tokens=n) for n in (1000, 20))
        assert long["predicted_from"] == short["predicted_from"] == "fitted"
        assert long["ti_uuid"] == instance_id(worker_id(net), SUBMITTED)
        # The server's line is 50 ms + 1 ms a token: what the worker measured, plus its own
        # overhead, which a loaded machine may stretch (hence the wide bounds).
        assert 800 < long["run_time_expect"] < 1600
        assert 0 <= short["run_time_expect"] < 400
        assert long["run_time_expect"] - short["run_time_expect"] > 700
        assert long["run_time_error"] > 0
        # Without tokens: the model-and-size predictor, as before.
        plain = post(g, "/queue/info", {"model_name": SUBMITTED})["queues"][0]
        assert plain["predicted_from"] != "fitted"
        refused = post(g, "/queue/submit", {**asked, "metadata": {"output_tokens": -3}})
        assert refused["status"] == "error" and "metadata.output_tokens" in refused["message"]


def test_the_gateways_requests_teach_the_fit_by_their_max_tokens(net: devnet.Devnet) -> None:
    gate = net.folder / "gate"
    url = json.loads((gate / "api.json").read_text())["url"]
    auth = {"authorization": f"Bearer {token(gate)}"}
    with httpx.Client(base_url=url, headers=auth, timeout=60) as gateway:
        for n in OUTPUTS:
            asked = {
                "model": ASKED,
                "messages": [{"role": "user", "content": "say it"}],
                "max_tokens": n,
            }
            answer = gateway.post("/v1/chat/completions", json=asked)
            assert answer.status_code == 200, answer.text
    with client(gate) as g:
        long, short = (queue(g, ASKED, input_tokens=2, output_tokens=n) for n in (1000, 20))
    assert long["predicted_from"] == short["predicted_from"] == "fitted"
    assert long["run_time_expect"] - short["run_time_expect"] > 700


def table_for(worker: bytes, wait_s: float, run_s: float) -> dict[str, Any]:
    """A lookup table (a table file's JSON) that expects `wait_s` and `run_s` of `worker`."""
    default = {"wait_mean": 1.0, "wait_err": 1.0, "run_mean": 10.0, "run_err": 10.0, "samples": 0}
    row = {"wait_mean": wait_s, "wait_err": 0.5, "run_mean": run_s, "run_err": 0.25, "samples": 9}
    return {
        "version": 1,
        "default": default,
        "sizes": [],
        "models": [],
        "workers": [{"worker": worker.hex(), **row}],
    }


def test_a_table_loads_through_the_scheduler_api_and_a_bad_one_changes_nothing(
    net: devnet.Devnet,
) -> None:
    table = table_for(worker_id(net), 7.0, 3.0)
    with client(net.folder / "gate") as g:
        try:
            ok = post(g, "/scheduler/predict_mode", {"mode": "lookup_table", "table": table})
            assert ok == {"status": "success", "message": "OK"}
            shown = queue(g, SUBMITTED)
            assert shown["predicted_from"] == "table"
            assert (shown["waiting_time_expect"], shown["run_time_expect"]) == (7000.0, 3000.0)

            bad = {**table, "workers": [{**table["workers"][0], "worker": "beef"}]}
            refused = post(g, "/scheduler/predict_mode", {"mode": "lookup_table", "table": bad})
            assert refused["status"] == "error"
            assert refused["message"].startswith("table.workers[0].worker: expected a worker id")
            odd = post(g, "/scheduler/predict_mode", {"mode": "default", "table": table})
            assert odd["status"] == "error" and "only with mode 'lookup_table'" in odd["message"]
            assert queue(g, SUBMITTED)["waiting_time_expect"] == 7000.0  # the good one stays
        finally:
            assert post(g, "/scheduler/predict_mode", {"mode": "default"})["status"] == "success"
        assert queue(g, SUBMITTED)["predicted_from"] != "table"


def test_the_cli_loads_a_table_file_and_refuses_a_bad_one_naming_file_and_field(
    net: devnet.Devnet, tmp_path: Path
) -> None:
    gate = str(net.folder / "gate")
    table = tmp_path / "table.json"
    table.write_text(json.dumps(table_for(worker_id(net), 4.5, 2.0)))
    try:
        loaded = p2psched(
            "scheduler", "predict-mode", "lookup_table", "--table", str(table), "--data-dir", gate
        )
        assert loaded.returncode == 0, loaded.stderr
        assert "predict mode lookup_table" in loaded.stdout
        with client(net.folder / "gate") as g:
            assert queue(g, SUBMITTED)["waiting_time_expect"] == 4500.0

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**table_for(worker_id(net), 1.0, 1.0), "sizes": [{}]}))
        for written, said in (
            (bad, f"{bad}.sizes[0]: expected a map"),
            (tmp_path / "missing.json", "No such file"),
            (table.with_suffix(".txt"), "not a JSON table"),
        ):
            if written.suffix == ".txt":
                written.write_text("{ not json")
            refused = p2psched(
                "scheduler",
                "predict-mode",
                "lookup_table",
                "--table",
                str(written),
                "--data-dir",
                gate,
            )
            assert refused.returncode != 0 and said in refused.stderr, refused.stderr
        wrong = p2psched(
            "scheduler", "predict-mode", "default", "--table", str(table), "--data-dir", gate
        )
        assert wrong.returncode != 0 and "--table goes with lookup_table" in wrong.stderr
        with client(net.folder / "gate") as g:
            assert queue(g, SUBMITTED)["waiting_time_expect"] == 4500.0  # still the good one
    finally:
        back = p2psched("scheduler", "predict-mode", "default", "--data-dir", gate)
        assert back.returncode == 0 and "predict mode default" in back.stdout
