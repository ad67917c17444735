"""The node's local control API: HTTP/JSON (FastAPI on Hypercorn's trio worker), bound to
127.0.0.1 and its Unix socket. The CLI's commands that act on a running node use it.

Owns: the routes (each reads or drives the node through its façade, `NodeFacade`, and answers
with a model that `/openapi.json` describes), the token check, and where a running node says it
listens (`<data-dir>/api.json`, next to `<data-dir>/api.token`, both readable by the owner only).
A request shows the token one of two ways: as `Authorization: Bearer <token>` (the Unix socket,
the dashboard in a browser, curl, Prometheus: their user points them at their node), or signed
in a session (`sessions.py`), as the CLI's client does over TCP, never sending the token there.
Promises: every error is a 4xx with `{"status": "error", "message": ...}` naming what was wrong;
a request with neither gets 401 and changes nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from p2psched.api import docs, metrics, openai, rest_api, scheduler_api, ui
from p2psched.api.bodies import (
    REFUSAL_STATUS,
    Cancelled,
    CancelRequest,
    ChallengeRequest,
    FailureList,
    JobList,
    JobSubmission,
    PeerList,
    PredictMode,
    QueueEntry,
    QueueInfo,
    QueuePlacement,
    QueueSubmission,
    StrategyChoice,
    Switched,
    TaskList,
    TaskQuery,
    WorkerList,
    refusals,
)
from p2psched.api.endpoint import (
    ENDPOINT_FILE,
    MAC_SCHEME,
    NONCE_BYTES,
    SESSION_GONE_HEADER,
    SESSION_PATH,
    SOCKET_FILE,
    TOKEN_FILE,
    ApiTls,
    session_gone_proof,
    socket_path,
)
from p2psched.api.sessions import UNKNOWN_SESSION, Claim, SessionLimits, SignedSessions
from p2psched.home import private_dir, write_private
from p2psched.node.config import ServerTable
from p2psched.node.instances import TaskInstances
from p2psched.node.node import Node
from p2psched.node.snapshots import (
    CapacityCheck,
    DrainState,
    GateStatus,
    JobAccepted,
    JobStatus,
    Ledger,
    NodeInfo,
    ResultsPage,
    SchedulerSettings,
    TaskHistory,
)
from p2psched.node.status import (
    JOBS_SHOWN,
    NodeFacade,
    Refusal,
)

_READ_AHEAD_BYTES = 64 << 10  # a body read before the route runs, at most

MSGPACK = "application/msgpack"
_OUTPUT: dict[int | str, dict[str, Any]] = {  # a task's output: as it came, not as JSON
    200: {
        "description": "the output, as MessagePack",
        "content": {MSGPACK: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


def api_token(data_dir: Path) -> str:
    """This node's API token, created on first use (mode 0600)."""
    path = private_dir(data_dir) / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if len(token) >= 32:
            path.chmod(0o600)  # (a copy may have loosened it)
            return token
    except FileNotFoundError:
        pass
    # None yet, or one too short to be ours (a write cut short): a new one, all at once.
    token = secrets.token_urlsafe(32)
    write_private(path, (token + "\n").encode())
    return token


def make_app(
    node: Node, token: str, limits: SessionLimits | None = None, server: ServerTable | None = None
) -> FastAPI:
    # (FastAPI's own /docs would load Swagger UI from a CDN)
    app = FastAPI(title="p2psched node control API", version="1", docs_url=None, redoc_url=None)
    app.include_router(ui.router)
    app.include_router(docs.router)
    facade = NodeFacade(node)
    metrics.install(app, facade)
    openai.install(app, facade, server or ServerTable())
    _guard(app, token, SignedSessions(token, limits))
    for routes in (_job_routes, _operator_routes, _design_document_routes):
        app.include_router(routes(facade))
    instances = TaskInstances(node, facade)
    app.include_router(scheduler_api.document_routes(facade, instances))
    app.include_router(rest_api.rest_routes(facade, instances))
    return app


def _guard(app: FastAPI, token: str, sessions: SignedSessions) -> None:
    """The token, as a bearer or by a signed session, on every route but the documentation,
    the page, a session's opening, and the design documents' paths asked from loopback
    (`scheduler_api.open_to_loopback`); errors as `{status, message}`."""

    async def refusal(request: Request) -> Response | None:
        """The answer that refuses `request`, or None to let it through."""
        # The path routing will use (the scope's), never one rebuilt from the Host header.
        path = request.scope["path"]
        public = path in ("/openapi.json", SESSION_PATH) or ui.serves(path) or docs.serves(path)
        if not public and not scheduler_api.open_to_loopback(request.scope):
            given = request.headers.get("authorization", "")
            if given.startswith(MAC_SCHEME + " "):
                why = await _signed(sessions, request, given)
                if why is not None:
                    answer = _error(401, f"signed request refused: {why}")
                    if why == UNKNOWN_SESSION:  # (proved ours: the client may ask again)
                        answer.headers[SESSION_GONE_HEADER] = session_gone_proof(token, given)
                    return answer
            elif not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                # No path in the answer: it may go to another machine (--api-remote).
                said = f"missing or wrong bearer token (the node's {TOKEN_FILE})"
                if openai.serves(path):  # (an OpenAI client's API key is the token)
                    return openai.error(401, said, "invalid_request_error", "invalid_api_key")
                return _error(401, said)
            # A small body is read before answering, also by routes that take none: an answer
            # sent before it came makes Hypercorn close the connection, and the client's write
            # of the body then fails (a broken pipe), though the request was carried out.
            # (A larger one is for a route that reads it, within its own limit.)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) <= _READ_AHEAD_BYTES:
                await request.body()
        return None

    def socket_refusal(connection: HTTPConnection) -> Response | None:
        """The answer that refuses a WebSocket's opening, or None: a bearer token only (a
        signed session's MAC covers a body, which an opening has not)."""
        given = connection.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return _error(401, f"a WebSocket needs the bearer token (the node's {TOKEN_FILE})")

    app.add_middleware(_Guard, refusal=refusal, socket_refusal=socket_refusal)

    @app.get(SESSION_PATH, include_in_schema=False)
    async def open_session(nonce: str) -> dict[str, str]:
        """A signed session for a client that sent `nonce`, and proof that this server holds
        the token: what the CLI's client asks first on each TCP connection."""
        if len(nonce) != 2 * NONCE_BYTES or not _is_hex(nonce):
            raise HTTPException(422, f"nonce: {NONCE_BYTES} bytes in hex")
        opened = sessions.open(bytes.fromhex(nonce), trio.current_time())
        return {"session": opened.session, "proof": opened.proof}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        path = request.scope["path"]
        if not openai.serves(path):
            return _error(e.status_code, str(e.detail))
        # (The framework's own errors too, a wrong method say: an OpenAI client reads these.)
        said = str(e.detail)
        allowed = {k.lower(): v for k, v in (e.headers or {}).items()}.get("allow")
        if e.status_code == 405 and allowed:
            said = f"{request.method} is not allowed on {path} (use {allowed})"
        answer = openai.error(e.status_code, said, "invalid_request_error", None)
        answer.headers.update(e.headers or {})
        return answer

    @app.exception_handler(Refusal)
    async def refused(request: Request, e: Refusal) -> JSONResponse:
        return _error(REFUSAL_STATUS.get(type(e), 400), str(e))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")


class _Guard:
    """Lets a request through to `app` unless `refusal` answers it, handing `app` what
    `refusal` read of its body first; a WebSocket only with the bearer token (no route serves
    one: it is refused, as an HTTP answer, before the app sees it); the server's lifespan
    events as they come. A client that hangs up while its body is read ends its request
    there: it is gone, nothing is answered, and nothing is logged. (A plain ASGI middleware:
    Starlette's `@app.middleware` runs each request's route in a task of its own, its answer
    passed on through a stream, which cost a busy OpenAI gateway a tenth of its CPU.)"""

    def __init__(
        self,
        app: ASGIApp,
        refusal: Callable[[Request], Awaitable[Response | None]],
        socket_refusal: Callable[[HTTPConnection], Response | None],
    ) -> None:
        self.app = app
        self.refusal = refusal
        self.socket_refusal = socket_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # (a WebSocket's; ASGI has no other)
            refused = self.socket_refusal(HTTPConnection(scope))
            await (refused or self.app)(scope, receive, send)
            return
        read: list[Message] = []

        async def reading() -> Message:
            message = await receive()
            read.append(message)
            return message

        async def replayed() -> Message:
            return read.pop(0) if read else await receive()

        try:
            answer = await self.refusal(Request(scope, reading))
            await (answer or self.app)(scope, receive if answer else replayed, send)
        except ClientDisconnect:
            pass  # (its client left while its body was read: no one to answer)


async def _signed(sessions: SignedSessions, request: Request, authorization: str) -> str | None:
    """Why a signed request is refused, or None: its body is read only once its session and
    counter hold (a stranger's upload is not buffered first)."""
    now = trio.current_time()
    claim = sessions.claim(authorization, now)
    if not isinstance(claim, Claim):
        return claim
    scope = request.scope
    target = scope.get("raw_path") or scope["path"].encode()
    if scope["query_string"]:
        target += b"?" + scope["query_string"]
    return sessions.admit(claim, request.method, target, await request.body(), now)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _job_routes(facade: NodeFacade) -> APIRouter:
    """The node, its gate, and its jobs: submit, follow, cancel."""
    router = APIRouter()

    @router.get("/v1/node", responses=refusals())
    async def node_info() -> NodeInfo:
        return facade.info()

    @router.get("/v1/gate", responses=refusals(404))
    async def gate_status() -> GateStatus:
        """The gate's relay: its address, reservations, circuits, counters and limits."""
        return facade.gate()

    @router.post("/v1/jobs", status_code=201, responses=refusals(422))
    async def submit(body: JobSubmission) -> JobAccepted:
        return facade.submit(body.spec, body.source)

    @router.get("/v1/jobs", responses=refusals(422))
    async def jobs(limit: int = JOBS_SHOWN, gateway: bool = False) -> JobList:
        """Its running jobs, and the newest others up to `limit` in all (those it ran before
        it restarted too, from its store), newest first. `gateway=true`: the OpenAI gateway's
        requests instead (running, and the newest 100 finished, fewer if their outputs come
        to over 16 MiB: the store keeps only their ledger), which are never listed with the
        others."""
        return JobList(jobs=facade.jobs(limit, gateway=gateway))

    @router.get("/v1/jobs/{job_id}", responses=refusals(404, 422))
    async def job_status(job_id: str) -> JobStatus:
        return facade.job(job_id)

    @router.get("/v1/jobs/{job_id}/tasks/{index}/history", responses=refusals(404, 422))
    async def task_history(job_id: str, index: int) -> TaskHistory:
        """A task's every state transition, with its time and reason, from the node's store."""
        return facade.task_history(job_id, index)

    @router.get(
        "/v1/jobs/{job_id}/tasks/{index}/output",
        responses={**_OUTPUT, **refusals(404, 422)},
        response_class=Response,
    )
    async def task_output(job_id: str, index: int) -> Response:
        """A completed task's output as MessagePack, as its receipt hashes it (SHA-256): one
        too large to show in a page of results is read from here, from its file."""
        kept = facade.task_output(job_id, index)
        if isinstance(kept, Path):
            return FileResponse(kept, media_type=MSGPACK)
        return Response(kept, media_type=MSGPACK)

    @router.get("/v1/jobs/{job_id}/tasks", responses=refusals(404, 422))
    async def tasks(job_id: str, state: str | None = None) -> TaskList:
        return TaskList(tasks=facade.tasks(job_id, state))

    @router.get("/v1/jobs/{job_id}/results", responses=refusals(404, 422))
    async def results(job_id: str, after: int = 0, limit: int = 1000) -> ResultsPage:
        return facade.results(job_id, after, limit)

    @router.post("/v1/jobs/{job_id}/cancel", responses=refusals(404, 422))
    async def cancel(job_id: str, body: CancelRequest) -> Cancelled:
        return Cancelled(cancelled=facade.cancel(job_id, body.tasks))

    return router


def _operator_routes(facade: NodeFacade) -> APIRouter:
    """What an operator switches and reads: strategy, predictor, ledger, draining, failures,
    peers and workers."""
    router = APIRouter()

    @router.get("/v1/scheduler", responses=refusals())
    async def scheduler() -> SchedulerSettings:
        return facade.scheduler()

    @router.post("/v1/scheduler/set", responses=refusals(400, 422))
    async def set_strategy(body: StrategyChoice) -> Switched:
        """Switch the scheduling strategy; it applies at once to every job of this node."""
        facade.switch_strategy(body.name)
        return Switched()

    @router.post("/v1/scheduler/predict_mode", responses=refusals(400, 422))
    async def set_predict_mode(body: PredictMode) -> Switched:
        """`default` learns from what this node observes; `lookup_table` answers from a table
        frozen from it, or `table` if given (a bad one is refused naming its field)."""
        facade.switch_predictor(body.mode, body.table)
        return Switched()

    @router.get("/v1/ledger", responses=refusals(409, 422))
    async def ledger(verify: bool = False) -> Ledger:
        """Spent and earned, per job and per peer, from the signed commitments and receipts
        this node keeps; `verify` re-checks every entry's signature."""
        return facade.ledger(verify)

    @router.post("/v1/workers/{worker}/challenge", responses=refusals(404, 422))
    async def challenge(worker: str, body: ChallengeRequest) -> CapacityCheck:
        """Challenge the capacity a worker's ad claims: it multiplies two n x n matrices from
        a seed sent now, commits to the product's Merkle root, then opens rows picked at
        random; each is checked, and the time against its ad. Paid at its price if it
        passes; the outcome goes into its record here."""
        return await facade.challenge(worker, body.n, body.rows)

    @router.post("/v1/worker/drain", responses=refusals(409))
    async def drain() -> DrainState:
        """A draining worker finishes what it holds and takes nothing new (its quotes and
        commitments are declined with that reason), for maintenance or a clean leave."""
        return facade.drain(True)

    @router.post("/v1/worker/undrain", responses=refusals(409))
    async def undrain() -> DrainState:
        return facade.drain(False)

    @router.get("/v1/failures", responses=refusals(422))
    async def failures(limit: int = 50) -> FailureList:
        """The latest failures, newest first: each try that failed on a worker (with the
        worker and why), and tasks of this node's jobs that ended failed."""
        return FailureList(failures=facade.failures(limit))

    @router.get("/v1/peers", responses=refusals())
    async def peers() -> PeerList:
        """The DHT nodes in this node's routing table: id, address, last heard from."""
        return PeerList(peers=facade.peers())

    @router.get("/v1/workers", responses=refusals(422))
    async def workers(need: str = "") -> WorkerList:
        """The ads of the live workers that match `need` (`gpu=A100,ram>=32`, as `p2psched
        workers --need` takes it; empty: every worker)."""
        return WorkerList(workers=await facade.workers(need))

    return router


def _design_document_routes(facade: NodeFacade) -> APIRouter:
    """The design documents' task submission, task query and queue info, under /v1."""
    router = APIRouter()

    @router.post("/v1/queue/submit", responses=refusals(404, 422, 503))
    async def queue_submit(body: QueueSubmission) -> QueuePlacement:
        """Submit one task for a model (the design documents' `/queue/submit`): the node
        places it as it places a job's. Answers once a worker was chosen, or `wait_s` passed
        (then `scheduled_ti` is empty and `task/query` tells more later)."""
        placed = await facade.submit_task(
            body.model_name,
            body.task_input,
            body.driver,
            body.wait_s,
            metadata=body.metadata.told(),
        )
        return QueuePlacement.of(placed)

    @router.get("/v1/queue/info", responses=refusals(422))
    async def queue_info(model_name: str = "") -> QueueInfo:
        """Per worker this node knows: expected wait (mean and error, in milliseconds, as the
        design documents give them) and run time for a model, from the predictor."""
        return QueueInfo(queues=[QueueEntry.of(w) for w in facade.queue(model_name or None)])

    @router.get("/v1/task/query", responses=refusals(404, 422))
    async def task_query(task_id: str) -> TaskQuery:
        """A task's state, worker, submit time and result (the design documents'
        `/task/query`); the result is the output once completed, the error once failed."""
        return TaskQuery.of(facade.task(task_id))

    return router


async def serve_api(
    node: Node,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ApiTls | None = None,
    sessions: SessionLimits | None = None,
    server: ServerTable | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API on TCP (TLS if `tls`) and on `<data-dir>/api.sock` (mode 0600, in
    a 0700 directory: the owner's alone, for the CLI); `task_status` gets the TCP base URL.
    `sessions` bounds the signed sessions TCP clients open; `server` is the config file's
    [server] table (its connections' timeouts, the gateway's bounds). `<data-dir>/api.json`
    says where it is for as long as it runs."""
    server = server or ServerTable()
    token = api_token(node.data_dir)
    config = Config()
    # (Hypercorn's hint says int; it takes any number of seconds)
    config.read_timeout = server.read_timeout_s  # type: ignore[assignment]
    config.keep_alive_timeout = server.keep_alive_s
    config.umask = 0o177  # the socket is created 0600
    if tls is not None:
        config.certfile, config.keyfile = str(tls.cert), str(tls.key)
    config.accesslog = None
    config.errorlog = logging.getLogger("p2psched.api")
    with socket_path(node.data_dir) as unix:
        # Hypercorn serves TLS on `bind` and plain HTTP on `insecure_bind` when it has a key.
        if tls is None:
            config.bind = [f"{host}:{port}", f"unix:{unix}"]
        else:
            config.bind, config.insecure_bind = [f"{host}:{port}"], [f"unix:{unix}"]
        async with _endpoint_file(node.data_dir) as announce:

            async def started(task_status: trio.TaskStatus[list[str]]) -> None:
                app = make_app(node, token, sessions, server)
                await serve(app, config, task_status=task_status)  # type: ignore[arg-type]

            async with trio.open_nursery() as nursery:
                urls: list[str] = await nursery.start(started)
                url = next(u for u in urls if u.startswith(("http://", "https://")))
                info = {"url": url, "socket": SOCKET_FILE, "pid": os.getpid()}
                announce({**info, "node_id": node.node_id.hex()})
                task_status.started(url)


@asynccontextmanager
async def _endpoint_file(data_dir: Path) -> AsyncIterator[Any]:
    path = data_dir / ENDPOINT_FILE

    def announce(info: dict[str, Any]) -> None:
        write_private(path, json.dumps(info).encode())

    try:
        yield announce
    finally:
        path.unlink(missing_ok=True)
        (data_dir / SOCKET_FILE).unlink(missing_ok=True)
