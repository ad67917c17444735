"""The node's local control API: HTTP/JSON (FastAPI on Hypercorn's trio worker), bearer-token
authenticated, bound to 127.0.0.1. The CLI's commands that act on a running node use it.

Owns: the routes, the token check, and where a running node says it listens
(`<data-dir>/api.json`, next to `<data-dir>/api.token`, both readable by the owner only).
Promises: every error is a 4xx with `{"status": "error", "message": ...}` naming what was wrong;
a request without the token gets 401 and changes nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from hypercorn.config import Config
from hypercorn.trio import serve
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from p2psched.api import metrics, ui
from p2psched.api.endpoint import ENDPOINT_FILE as ENDPOINT_FILE
from p2psched.api.endpoint import TOKEN_FILE as TOKEN_FILE
from p2psched.node.node import Node
from p2psched.resources.need import Need, NeedError
from p2psched.scheduler.discovery import ad_json
from p2psched.scheduler.dispatch import task_id_for
from p2psched.scheduler.jobs import SubmittedJob, to_json
from p2psched.scheduler.jobspec import JobSpecError, derive_tasks, parse_job
from p2psched.scheduler.predictor import MAX_REASON, MODES
from p2psched.scheduler.store import Store
from p2psched.scheduler.strategy import STRATEGIES
from p2psched.wire.address import host_port
from p2psched.wire.codec import decode


class ApiError(HTTPException):
    pass


class JobSubmission(BaseModel):
    spec: dict[str, Any] = Field(description="the job spec, as job.yaml holds it")
    source: str = Field("<api>", description="where the spec came from, for error messages")


class CancelRequest(BaseModel):
    tasks: list[str] | None = Field(None, description="task ids; none or null: the whole job")


class StrategyChoice(BaseModel):
    name: str = Field(description=f"one of: {', '.join(STRATEGIES)}")


class PredictMode(BaseModel):
    mode: str = Field(description=f"one of: {', '.join(MODES)}")


class QueueSubmission(BaseModel):
    """The design documents' task submission: one task for a model, placed by the node."""

    model_name: str = Field(
        min_length=1, max_length=128, description="a model some worker serves (its ad lists it)"
    )
    task_input: dict[str, Any] = Field(
        default_factory=dict, description="what the worker's driver is given"
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="about the task, for the predictor; accepted, not used yet (it predicts from "
        "the model and the input's size)",
    )
    driver: str = Field("http", max_length=32, description="the driver that runs it: http, echo…")
    wait_s: float = Field(
        5.0, ge=0.0, le=60.0, description="how long to wait for the task to be placed"
    )


def ledger_view(store: Store, verify: bool) -> dict[str, Any]:
    view = store.ledger_summary()
    if verify:
        view["problems"] = store.verify_ledger()
    return view


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


def api_token(data_dir: Path) -> str:
    """This node's API token, created on first use (mode 0600)."""
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if len(token) >= 32:
            path.chmod(0o600)  # (a copy may have loosened it)
            return token
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
    # None yet, or one too short to be ours (a write cut short): a new one, all at once.
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    tmp.replace(path)
    return token


def make_app(node: Node, token: str) -> FastAPI:
    app = FastAPI(title="p2psched node control API", version="1")
    app.include_router(ui.router)
    metrics.install(app, node)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        # The path routing will use (the scope's), never one rebuilt from the Host header.
        path = request.scope["path"]
        if path not in ("/openapi.json", "/docs") and not ui.serves(path):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                # No path in the answer: it may go to another machine (--api-remote).
                return _error(401, f"missing or wrong bearer token (the node's {TOKEN_FILE})")
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    def job_of(job_id: str) -> SubmittedJob:
        job = node.jobs.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} on this node (see GET /v1/jobs)")
        return job

    @app.get("/v1/node")
    async def node_info() -> dict[str, Any]:
        host, port = node.dht.address
        return {
            "node_id": node.node_id.hex(),
            "roles": list(node.roles),
            "dht": host_port(host, port),
            "channel": node.worker.address if node.worker else None,
            "reachability": node.worker.reachability if node.worker else None,
            "reachability_why": node.worker.why if node.worker else None,
            "relay_moves": node.worker.relay.moves if node.worker and node.worker.relay else 0,
            "routing_table": len(node.dht.protocol.routing),
            "jobs": len(node.jobs.jobs),
        }

    @app.get("/v1/gate")
    async def gate_status() -> dict[str, Any]:
        """The gate's relay: its address, reservations, circuits, counters and limits."""
        if node.gate is None:
            raise HTTPException(404, "this node is not a gate (start one with p2psched gate)")
        return node.gate.status()

    @app.post("/v1/jobs", status_code=201)
    async def submit(body: JobSubmission) -> dict[str, Any]:
        try:
            job = node.jobs.submit(parse_job(body.spec, source=body.source), body.spec)
        except JobSpecError as e:
            raise ApiError(422, str(e)) from None
        return {"job": job.job_id, "tasks": len(job.run.tasks)}

    @app.get("/v1/jobs")
    async def jobs() -> list[dict[str, Any]]:
        now = node.dht.now()
        return [job.status(now) for job in node.jobs.jobs.values()]

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str) -> dict[str, Any]:
        return job_of(job_id).status(node.dht.now())

    @app.get("/v1/jobs/{job_id}/tasks/{index}/history")
    async def task_history(job_id: str, index: int) -> dict[str, Any]:
        """A task's every state transition, with its time and reason, from the node's store."""
        job = job_of(job_id)
        task = task_id_for(job_id, index)
        if task not in job.run.tasks:
            raise ApiError(404, f"job {job_id} has no task {index} (it has {len(job.run.tasks)})")
        store = node.jobs.dispatcher.store
        moves = store.transitions(job_id, task) if store is not None else []
        return {"task": task, "state": job.run.tasks[task].state.value, "transitions": moves}

    @app.get("/v1/jobs/{job_id}/tasks")
    async def tasks(job_id: str, state: str | None = None) -> list[dict[str, Any]]:
        job = job_of(job_id)
        known = {t.state.value for t in job.run.tasks.values()} | {
            "unscheduled",
            "queued",
            "negotiating",
            "scheduled",
            "sent",
            "running",
            "completed",
            "failed",
            "aborted",
            "timed_out",
        }
        if state is not None and state not in known:
            raise ApiError(422, f"unknown state {state!r}; known: {', '.join(sorted(known))}")
        return [
            job.task_view(t)
            for t in job.run.tasks.values()
            if state is None or t.state.value == state
        ]

    @app.get("/v1/jobs/{job_id}/results")
    async def results(job_id: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        job = job_of(job_id)
        if after < 0 or not 1 <= limit <= 10_000:
            raise ApiError(422, "after must be >= 0 and limit 1..10000")
        settled = job.settled[after : after + limit]
        return {"next": after + len(settled), "results": [job.result_view(t) for t in settled]}

    @app.post("/v1/jobs/{job_id}/cancel")
    async def cancel(job_id: str, body: CancelRequest) -> dict[str, Any]:
        tasks = body.tasks
        job = job_of(job_id)
        unknown = [t for t in tasks or [] if t not in job.run.tasks]
        if unknown:
            raise ApiError(404, f"job {job_id} has no task {unknown[0]!r}")
        return {"cancelled": node.jobs.cancel(job_id, tasks)}

    @app.get("/v1/scheduler")
    async def scheduler() -> dict[str, Any]:
        d = node.jobs.dispatcher
        return {
            "strategy": d.strategy.name,
            "strategies": list(STRATEGIES),
            "predict_mode": d.predictor.mode,
            "predict_modes": list(MODES),
        }

    @app.post("/v1/scheduler/set")
    async def set_strategy(body: StrategyChoice) -> dict[str, Any]:
        """Switch the scheduling strategy; it applies at once to every job of this node."""
        return switched(node.jobs.dispatcher.strategy.set, body.name)

    @app.post("/v1/scheduler/predict_mode")
    async def set_predict_mode(body: PredictMode) -> dict[str, Any]:
        """`default` learns from what this node observes; `lookup_table` answers from a table
        frozen from it (or loaded), fast and fixed."""
        return switched(node.jobs.dispatcher.predictor.set_mode, body.mode)

    def switched(switch: Callable[[str], None], name: str) -> dict[str, Any]:
        """The design documents' answer to a switch: success and OK, or a 400 saying why."""
        try:
            switch(name)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return {"status": "success", "message": "OK"}

    @app.get("/v1/queue/info")
    async def queue_info(model_name: str = "") -> dict[str, Any]:
        """Per worker this node knows: expected wait (mean and error, in milliseconds, as the
        design documents give them) and run time for a model, from the predictor."""
        d = node.jobs.dispatcher
        queues = []
        for worker in d.known_workers():
            if model_name and not serves(worker, model_name):
                continue
            e = d.predictor.estimate(worker, model_name or None, 0)
            queues.append(
                {
                    "model_name": model_name or None,
                    "ti_uuid": worker.hex(),
                    "waiting_time_expect": e.wait_mean * 1000.0,
                    "waiting_time_error": e.wait_err * 1000.0,
                    "run_time_expect": e.run_mean * 1000.0,
                    "source": e.source,
                    "view": d.views.view(worker, d.clock()) if worker in d.views else None,
                }
            )
        return {"status": "success", "queues": queues}

    def serves(worker: bytes, model: str) -> bool:
        """Whether its latest ad lists `model`, or this node saw it run that model."""
        d = node.jobs.dispatcher
        ad = d.ads.get(worker)
        if ad is not None and ad.expires > node.dht.now():
            return model in ad.profile.installed_models
        view = d.views.view(worker) if worker in d.views else {}
        return any(m["model"] == model for m in view.get("performance", {}).get("models", []))

    @app.get("/v1/ledger")
    async def ledger(verify: bool = False) -> dict[str, Any]:
        """Spent and earned, per job and per peer, from the signed commitments and receipts
        this node keeps; `verify` re-checks every entry's signature."""
        store = node.jobs.dispatcher.store
        if store is None:
            raise ApiError(409, "this node keeps no store")
        return ledger_view(store, verify)

    @app.post("/v1/worker/drain")
    async def drain() -> dict[str, Any]:
        return set_draining(True)

    @app.post("/v1/worker/undrain")
    async def undrain() -> dict[str, Any]:
        return set_draining(False)

    def set_draining(on: bool) -> dict[str, Any]:
        """A draining worker finishes what it holds and takes nothing new (its quotes and
        commitments are declined with that reason), for maintenance or a clean leave."""
        if node.worker is None:
            raise ApiError(409, "this node is not a worker (start it with `p2psched worker join`)")
        manager = node.worker.service.manager
        manager.draining = on
        return {"draining": on, "held": manager.held}

    @app.post("/v1/queue/submit")
    async def queue_submit(body: QueueSubmission) -> dict[str, Any]:
        """Submit one task for a model (the design documents' `/queue/submit`): the node
        places it as it places a job's. Answers once a worker was chosen, or `wait_s` passed
        (then `scheduled_ti` is empty and `task/query` tells more later)."""
        spec = {
            "name": "queue-" + re.sub(r"[^A-Za-z0-9._-]+", "-", body.model_name)[:48],
            "driver": body.driver,
            "resources": {"model": body.model_name},
            "tasks": [{"input": body.task_input}],
        }
        try:
            parsed = parse_job(spec, source="queue/submit")
        except JobSpecError as e:
            raise ApiError(422, str(e)) from None
        need = derive_tasks(parsed)[0].need
        if not await node.discovery.find(need):
            raise ApiError(
                404, f"no worker in the network serves model {body.model_name!r} ({need})"
            )
        job = node.jobs.submit(parsed, spec)
        task = next(iter(job.run.tasks.values()))
        with trio.move_on_after(body.wait_s):
            while task.worker is None and not task.state.final:
                await trio.sleep(0.05)
        worker = task.placed_on
        return {
            "status": "success",
            "task_id": task.spec.task_id,
            "scheduled_ti": worker.hex() if worker else "",
            "task_status": task.state.value,
        }

    @app.get("/v1/task/query")
    async def task_query(task_id: str) -> dict[str, Any]:
        """A task's state, worker, submit time and result (the design documents'
        `/task/query`); the result is the output once completed, the error once failed."""
        job_id = task_id.rpartition("/")[0]
        job = node.jobs.jobs.get(job_id)
        t = job.run.tasks.get(task_id) if job is not None else None
        if job is not None and t is not None:
            worker = t.placed_on
            state, submitted = t.state.value, job.submitted_at
            result = to_json(t.output) if state == "completed" else t.error
        else:  # a job no longer kept in memory: its record
            store = node.jobs.dispatcher.store
            found = store.task(job_id, task_id) if store is not None else None
            if found is None:
                raise ApiError(404, f"no task {task_id!r} on this node (a task id is JOB/N)")
            submitted, stored = found
            worker, state = stored.worker, stored.state
            output = decode(stored.output) if stored.output is not None else None
            result = to_json(output) if state == "completed" else stored.error
        return {
            "status": "success",
            "task_id": task_id,
            "task_status": state,
            "scheduled_ti": worker.hex() if worker else "",
            "submit_time": submitted,
            "result": result,
        }

    @app.get("/v1/failures")
    async def failures(limit: int = 50) -> dict[str, Any]:
        """The latest failures, newest first: each try that failed on a worker (with the
        worker and why), and tasks of this node's jobs that ended failed."""
        if not 1 <= limit <= 1000:
            raise ApiError(422, "limit must be 1..1000")
        d = node.jobs.dispatcher
        tried: list[dict[str, Any]] = [
            {
                "job": last.task.rpartition("/")[0],
                "task": last.task,
                "worker": worker.hex(),
                "reason": last.reason,
                "outcome": last.outcome,
                "at": last.at,
            }
            for worker, last in d.views.recent_failures
        ]
        last_try = {f["task"]: f["reason"] for f in tried}  # (newest last: the last try's)
        ended: list[dict[str, Any]] = []
        for job_id, task_id, at in d.ended_failures:
            job = node.jobs.jobs.get(job_id)
            t = job.run.tasks.get(task_id) if job is not None else None
            if t is None or last_try.get(task_id) == (t.error or "")[:MAX_REASON]:
                continue  # gone from memory, or the same failure as its last try: listed once
            ended.append(
                {
                    "job": job_id,
                    "task": task_id,
                    "worker": t.worker.hex() if t.worker else None,
                    "reason": t.error,
                    "outcome": t.state.value,
                    "at": at,
                }
            )
        latest = sorted(tried + ended, key=lambda f: -f["at"])[:limit]
        return {"status": "success", "failures": latest}

    @app.get("/v1/peers")
    async def peers() -> dict[str, Any]:
        """The DHT nodes in this node's routing table: id, address, last heard from."""
        now = node.dht.now()
        seen = node.dht.protocol.routing.seen()
        return {
            "status": "success",
            "peers": [
                {
                    "node_id": c.node_id.hex(),
                    "address": host_port(c.host, c.port),
                    "last_seen_s": round(max(0.0, now - last), 1),
                    "failures": fails,
                }
                for c, last, fails in sorted(seen, key=lambda x: -x[1])
            ],
        }

    @app.get("/v1/workers")
    async def workers(need: str = "") -> list[dict[str, Any]]:
        try:
            parsed = Need.parse(need)
        except NeedError as e:
            raise ApiError(422, f"need: {e}") from None
        ads = await node.discovery.find(parsed)
        now = node.dht.now()
        return [ad_json(ad, now) for ad in ads]

    return app


async def serve_api(
    node: Node,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API; `task_status` gets its base URL. `<data-dir>/api.json` says where
    it is for as long as it runs."""
    token = api_token(node.data_dir)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("p2psched.api")
    async with _endpoint_file(node.data_dir) as announce:

        async def started(task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(make_app(node, token), config, task_status=task_status)  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            urls: list[str] = await nursery.start(started)
            announce({"url": urls[0], "pid": os.getpid(), "node_id": node.node_id.hex()})
            task_status.started(urls[0])


@asynccontextmanager
async def _endpoint_file(data_dir: Path) -> AsyncIterator[Any]:
    path = data_dir / ENDPOINT_FILE

    def announce(info: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)

    try:
        yield announce
    finally:
        path.unlink(missing_ok=True)
