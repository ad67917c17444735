"""The task drivers: what turns a committed task's input into its result on this worker.

Promises: only drivers the operator enabled are made; each checks its input by the rules the job
spec checks it by (`resources.driver_inputs`) before it runs anything, and keeps to the task's time
limit; every failure reaches the caller as a one-line `DriverError` (cancellation still
propagates); a command runs only as its worker declared it (a fixed argv and typed parameters,
never free arguments), without a shell, sandboxed in the task's scratch directory under resource
limits (`worker.sandbox`), and is killed with all it started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import reprlib
import signal
import stat
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import trio

from p2psched.resources.detect import Device
from p2psched.resources.driver_inputs import KNOWN_DRIVERS, input_refusal, param_refusal
from p2psched.worker import sandbox, timer
from p2psched.worker.config import (
    ANY_MODEL,
    CommandDriverConfig,
    CommandProgram,
    HttpDriverConfig,
    WorkerConfig,
)
from p2psched.worker.health import check_server
from p2psched.worker.model_http import (
    health_url,
    origin,
    parsed,
    read_capped,
    read_events,
    redacted,
    request_url,
)

_log = logging.getLogger(__name__)

_MAX_REASON_CHARS = 400  # the scheduler shows a reason to a person; it is not a log
_ERROR_BODY_CHARS = 200
_SLEEP_REPORTS = 10  # at most this many progress reports per sleep, and at most one a second
_READ_CHUNK = 1 << 16
_SANDBOX_END_S = 10.0  # a bound on waiting for bwrap to end once its sandbox's init is killed


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REASON_CHARS else line[: _MAX_REASON_CHARS - 3] + "..."


class DriverError(Exception):
    """A task the driver could not run; str(e) is the reason the scheduler sees (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(_one_line(reason))


@dataclass(frozen=True, slots=True)
class DriverTask:
    task_id: str
    input: Any  # msgpack/JSON value
    model: str | None  # the model the task asked for, if any
    timeout_s: float
    scratch: Path  # for a driver that `uses_scratch`: an empty directory the caller made for this
    # task and removes afterwards; for the others, only the temporary folder
    # Where parts of the output go as the driver produces them (a streamed answer's chunks),
    # ahead of the whole, which `run` returns.
    partial: Callable[[Any], None] = lambda output: None
    devices: tuple[Device, ...] = ()  # the GPUs it runs on (`worker.devices`)


class Driver(Protocol):
    name: str
    uses_scratch: bool  # whether the task needs its scratch directory made (it costs a mkdir)

    async def run(self, task: DriverTask, progress: Callable[[float], None]) -> Any:
        """The task's msgpack-able result; raises `DriverError`; keeps to `task.timeout_s`."""
        ...


def _leaves(e: BaseException) -> Iterator[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            yield from _leaves(inner)
    else:
        yield e


async def _within_limits(name: str, timeout_s: float, run: Callable[[], Awaitable[Any]]) -> Any:
    """`run()` under the task's deadline, with whatever it raises turned into a `DriverError`.

    `trio.Cancelled` is a BaseException, so `except Exception` lets the caller's cancellation
    through (alone or in a group), while the deadline's own cancellation ends here.
    """
    if not timeout_s > 0:  # also NaN
        raise DriverError(f"timeout_s must be more than 0 seconds, not {timeout_s!r}")
    try:
        with trio.move_on_after(timeout_s):
            return await run()
    except DriverError:
        raise
    except Exception as e:
        leaves = list(_leaves(e))
        for leaf in leaves:
            if isinstance(leaf, DriverError):
                raise leaf from e
        # Not a failure of the task but of this code: the operator gets the traceback.
        _log.error("the %s driver failed unexpectedly", name, exc_info=e)
        first = leaves[0]
        raise DriverError(f"{name} driver failed: {type(first).__name__}: {first}") from e
    raise DriverError(f"timed out after {timeout_s:g}s")


def _check_input(driver: str, value: Any) -> None:
    reason = input_refusal(driver, value)
    if reason is not None:
        raise DriverError(reason)


class EchoDriver:
    """Returns the input as it came: for trying the network without running anything."""

    name = "echo"
    uses_scratch = False

    async def run(self, task: DriverTask, progress: Callable[[float], None]) -> Any:
        return task.input


class SleepDriver:
    """Waits `input.seconds` and says so: a task with a known duration, for tests and benchmarks."""

    name = "sleep"
    uses_scratch = False

    async def run(self, task: DriverTask, progress: Callable[[float], None]) -> Any:
        _check_input(self.name, task.input)
        seconds = task.input["seconds"]

        async def sleep() -> Any:
            reports = max(1, min(_SLEEP_REPORTS, math.floor(seconds)))
            start = trio.current_time()
            for i in range(1, reports + 1):
                # Deadlines from one start, so the reports do not add up their own delays.
                await timer.sleep_until(start + seconds * i / reports)
                progress(i / reports)
            return {"slept": seconds}

        return await _within_limits(self.name, task.timeout_s, sleep)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group has already exited


class _Output:
    """One capped output stream of a process."""

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.data = bytearray()
        self.over = False

    async def collect(self, stream: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
        while chunk := await stream.receive_some(_READ_CHUNK):
            self.data += chunk
            if len(self.data) > self.cap:
                self.over = True
                scope.cancel()  # stops the other readers; the process is killed on the way out
                return

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def _feed(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        async with stream:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # it stopped reading and maybe exited; its exit code says how that went


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class CommandDriver:
    """Runs a program the operator declared by name, with the typed parameters it declared, the
    task's files in its scratch directory and its stdin, in the sandbox (`worker.sandbox`)."""

    name = "command"
    uses_scratch = True

    def __init__(self, config: CommandDriverConfig) -> None:
        sandbox.check(config)  # the worker refuses to start rather than run tasks unconfined
        self._config = config

    async def run(self, task: DriverTask, progress: Callable[[float], None]) -> Any:
        _check_input(self.name, task.input)
        name: str = task.input["program"]
        program = self._config.programs.get(name)
        if program is None:
            allowed = ", ".join(sorted(self._config.programs)) or "none"
            raise DriverError(
                f"program {name[:64]!r} is not allowed on this worker; allowed: {allowed}"
            )
        _write_files(task.scratch, task.input.get("files", {}))
        argv = [*program.argv, *_parameters(program, task.input.get("params", {}), task.scratch)]
        stdin: str | None = task.input.get("stdin")
        data = None if stdin is None else stdin.encode("utf-8", errors="replace")

        async def execute() -> Any:
            return await self._execute(name, argv, data, task.scratch, task.devices)

        return await _within_limits(self.name, task.timeout_s, execute)

    async def _execute(
        self,
        program: str,
        argv: list[str],
        stdin: bytes | None,
        scratch: Path,
        devices: tuple[Device, ...],
    ) -> dict[str, Any]:
        # bwrap says on this pipe which process is its sandbox's init (unsandboxed, no pipe: the
        # program would hold it open).
        info_read, info_write = os.pipe() if self._config.sandbox != "none" else (-1, -1)
        started = False
        try:
            process = await trio.lowlevel.open_process(
                sandbox.command_line(self._config, scratch, argv, info_write, devices),
                pass_fds=(info_write,) if info_write >= 0 else (),
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=scratch,
                env=sandbox.environment(scratch, devices),
                # Its own process group: a kill then reaches whatever it started, too (in the
                # sandbox, its PID namespace does).
                start_new_session=True,
            )
            started = True
        except OSError as e:
            raise DriverError(f"cannot start {program!r}: {e.strerror or e}") from e
        finally:
            _close(info_write)  # bwrap's to hold now
            if not started:
                _close(info_read)
        stdout = _Output("stdout", self._config.max_output_bytes)
        stderr = _Output("stderr", self._config.max_output_bytes)
        init: int | None = None
        try:
            init = await _sandbox_init(info_read)
            async with trio.open_nursery() as nursery:
                if process.stdin is not None and stdin is not None:
                    nursery.start_soon(_feed, process.stdin, stdin)
                assert process.stdout is not None and process.stderr is not None
                nursery.start_soon(stdout.collect, process.stdout, nursery.cancel_scope)
                nursery.start_soon(stderr.collect, process.stderr, nursery.cancel_scope)
            for output in (stdout, stderr):
                if output.over:
                    raise DriverError(f"output over {output.cap} bytes on {output.name}")
            code = await process.wait()
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process, init)
                _close(info_read)
        if code != 0:
            raise DriverError(f"{program!r} {self._failure(code, stderr.text())}")
        shown = stderr.text() if self._config.stderr else ""
        return {"exit_code": code, "stdout": stdout.text(), "stderr": shown}

    def _failure(self, code: int, stderr: str) -> str:
        """Why a program failed, in words: its exit, the limit it hit, and (only if the operator
        lets stderr out) the last line it wrote there."""
        limits = self._config.limits
        signals = {
            signal.SIGXCPU: f"went over its CPU time limit ({limits.cpu_s} s)",
            signal.SIGXFSZ: f"went over its file size limit ({limits.file_size_mb} MiB)",
        }
        # A shell, or bwrap's init, reports a child killed by signal N as exit status 128 + N.
        signum = -code if code < 0 else code - 128 if 128 < code < 160 else 0
        reason = next((said for s, said in signals.items() if s == signum), _exit_reason(code))
        lines = [line for line in stderr.splitlines() if line.strip()]
        if lines and not self._config.stderr:
            # (a line of it, as a reason would show it: the task wrote it, up to the output cap)
            said = _one_line(lines[-1])
            _log.info("command driver: a task's program failed; its stderr ended: %s", said)
        return f"{reason}: {lines[-1].strip()}" if lines and self._config.stderr else reason


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


async def _sandbox_init(info: int) -> int | None:
    """The host pid of the sandbox's init, once bwrap has said it (None unsandboxed, or if bwrap
    ended first)."""
    if info < 0:
        return None
    said = b""
    while chunk := await _read_some(info):
        said += chunk
        if said.rstrip().endswith(b"}"):
            break
    return sandbox.init_pid(said)


async def _read_some(fd: int) -> bytes:
    await trio.lowlevel.wait_readable(fd)
    return os.read(fd, 4096)


async def _stop(process: trio.Process, init: int | None) -> None:
    """Kill the program on a timeout, a cancel or output over the cap, and after a normal exit
    whatever it left running; return once all of it is gone.

    In the sandbox the init of its PID namespace goes first: the kernel kills the rest of the
    namespace with it, and bwrap, its parent, reaps it and exits. Killing bwrap first would
    leave that init to the host's init to reap, a zombie that counts against the task user's
    process limit meanwhile. The group id names no one else's processes: it is ours until the
    leader is reaped, and in use after that for as long as any member of the group lives.
    """
    if init is not None and process.returncode is None:
        # bwrap is alive, so its child's pid is still its child's (reaped or not).
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGKILL)
        with trio.move_on_after(_SANDBOX_END_S):
            await process.wait()
    _kill_group(process.pid)
    process.kill()  # in case it moved itself out of its group
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            await pipe.aclose()
    await process.wait()


def _write_files(scratch: Path, files: dict[str, str]) -> None:
    """The task's input files, each new in its scratch directory (never through a link)."""
    for name, text in files.items():
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            fd = os.open(scratch / name, flags, 0o644)
        except OSError as e:
            raise DriverError(f"cannot write input file {name!r}: {e.strerror or e}") from e
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
            f.write(text)
    user = sandbox.task_user()
    if user[0] >= 0:  # a root worker hands the task's folder to the user the task runs as
        for path in (scratch, *(scratch / name for name in files)):
            os.chown(path, *user, follow_symlinks=False)


def _parameters(program: CommandProgram, given: dict[str, Any], scratch: Path) -> list[str]:
    """The argv after the program's own: options as declared, then `--` and the positional
    values; a parameter the program does not declare, or a value not of its type, is refused."""
    for name in given:
        if name not in program.params:
            known = ", ".join(program.params) or "none"
            raise DriverError(f"params.{name[:64]}: unknown parameter; this program takes: {known}")
    options: list[str] = []
    positional: list[str] = []
    for name, param in program.params.items():
        if name not in given:
            continue
        value = given[name]
        refusal = param_refusal(param.rule(), value)
        if refusal is None and param.type == "file":
            refusal = _scratch_file_refusal(scratch, value)
        if refusal is not None:
            raise DriverError(f"params.{name}: {refusal}, not {reprlib.repr(value)}")
        if param.type == "flag":
            options += [param.arg] if value and param.arg else []
        elif param.arg is not None:
            options += [param.arg, str(value)]
        else:
            positional.append(str(value))
    return [*options, "--", *positional] if positional else options


def _scratch_file_refusal(scratch: Path, name: str) -> str | None:
    try:
        found = os.lstat(scratch / name)
    except OSError:
        return "must name a file the task sent (input.files)"
    # A link could point anywhere: only a plain file that is the scratch directory's own.
    return None if stat.S_ISREG(found.st_mode) else "must name a plain file, not a link or folder"


class HttpDriver:
    """Posts the input as JSON to the endpoint serving the task's model; answers its JSON.

    It keeps one HTTP client per endpoint (per scheme, host and port: models one server serves
    share it) open while the worker runs (`open`), so a task pays no client's setup and reuses
    its connections. An endpoint on an OpenAI-compatible server (vLLM, llama.cpp's server,
    Ollama: its base URL, ending in /v1, or either of its completions URLs) takes a body with
    `messages` at chat/completions and any other at completions (`request_url`). An input
    with `stream: true` is posted for server-sent events: each event's JSON goes to the
    scheduler as a partial result as it arrives, and the task's result is the list of them
    all (what the receipt covers), the server's `[DONE]` left out. An endpoint's credentials
    go with its requests and its health check alone (no redirect is followed), never into a
    reason or a log line."""

    name = "http"
    uses_scratch = False

    def __init__(self, config: HttpDriverConfig, routes: Mapping[str, str] | None = None) -> None:
        self._config = config
        # The registered Task Instances' models (`worker.instances`), read at each task: they
        # come before the config's endpoints.
        self._routes: Mapping[str, str] = routes if routes is not None else {}
        self._clients: dict[str, httpx.AsyncClient] | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Its clients, open until the block ends; `run` needs them. Those of the config's
        endpoints open now; a registered instance's, at its first task."""
        async with contextlib.AsyncExitStack() as stack:
            self._clients, self._stack = {}, stack
            try:
                for endpoint in self._config.endpoints.values():
                    await self._client(endpoint.url)
                yield
            finally:
                self._clients = self._stack = None

    async def _client(self, url: str) -> httpx.AsyncClient:
        """The open client for `url`'s server (one per scheme, host and port)."""
        if self._clients is None or self._stack is None:
            raise RuntimeError("the http driver runs tasks only while it is open (`open`)")
        key = origin(url)
        if key not in self._clients:
            # One deadline for the whole exchange (set by `run`) rather than httpx's per-phase
            # timeouts, which a server trickling its answer would never trip; and no proxy from
            # the environment: the config alone says where requests go.
            client = httpx.AsyncClient(timeout=None, trust_env=False)
            self._clients[key] = await self._stack.enter_async_context(client)
        return self._clients[key]

    def endpoint_of(self, model: str | None) -> str | None:
        """The name of the config's endpoint that serves `model` (ANY_MODEL for the catch-all),
        or None: a registered instance serves it, or nothing does."""
        endpoints = self._config.endpoints
        if model is not None and model in self._routes:
            return None
        if model is not None and model in endpoints:
            return model
        return ANY_MODEL if ANY_MODEL in endpoints else None

    def _endpoint(self, model: str | None) -> tuple[str, Mapping[str, str]]:
        """Where `model`'s tasks go, and the credentials sent there (a registered instance
        takes none)."""
        if model is not None and model in self._routes:
            return self._routes[model], {}
        name = self.endpoint_of(model)
        if name is None:
            endpoints = self._config.endpoints
            served = ", ".join(sorted({*endpoints, *self._routes} - {ANY_MODEL})) or "none"
            asked = "a task without a model" if model is None else f"model {model[:64]!r}"
            raise DriverError(f"this worker serves no endpoint for {asked}; models: {served}")
        endpoint = self._config.endpoints[name]
        return endpoint.url, endpoint.headers

    def url_of(self, name: str) -> str:
        """The URL of the config's endpoint `name` (which the operator may see)."""
        return self._config.endpoints[name].url

    async def check(self, name: str) -> None:
        """The health check of the config's endpoint `name`, with its credentials, on its
        client; `Unhealthy` saying why it failed."""
        endpoint = self._config.endpoints[name]
        client = await self._client(endpoint.url)
        url, expect = health_url(endpoint.url, endpoint.health_path)
        await check_server(client, url, expect, headers=endpoint.headers)

    async def run(self, task: DriverTask, progress: Callable[[float], None]) -> Any:
        _check_input(self.name, task.input)
        endpoint, credentials = self._endpoint(task.model)
        client = await self._client(endpoint)
        url = request_url(endpoint, task.input)
        try:
            body = json.dumps(task.input, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise DriverError(f"input is not JSON: {e}") from e
        timeout = min(task.timeout_s, self._config.timeout_s)
        stream = task.input.get("stream") is True

        async def post() -> Any:
            partial = task.partial if stream else None
            return await self._post(client, url, body, credentials, partial)

        return await _within_limits(self.name, timeout, post)

    async def _post(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: bytes,
        credentials: Mapping[str, str],
        partial: Callable[[Any], None] | None,
    ) -> Any:
        """The answer to one POST; with `partial`, read as server-sent events, each handed to
        `partial` as it comes, and the list of them answered."""
        cap = self._config.max_response_bytes
        headers = {
            **credentials,
            "content-type": "application/json",
            "accept": "application/json" if partial is None else "text/event-stream",
            "accept-encoding": "identity",  # the cap counts what is held in memory
        }
        try:
            async with client.stream("POST", url, content=body, headers=headers) as response:
                if not response.is_success:
                    head, _ = await read_capped(response, _ERROR_BODY_CHARS * 4)
                    text = redacted(head.decode(errors="replace"), credentials)[:_ERROR_BODY_CHARS]
                    raise DriverError(
                        f"the model server answered HTTP {response.status_code}: {text}"
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise DriverError(f"response over {cap} bytes")
                answer: Any
                if partial is not None:
                    answer, over = await read_events(response, cap, partial)
                else:
                    data, over = await read_capped(response, cap)
                    answer = parsed(data)
                if over:
                    raise DriverError(f"response over {cap} bytes")
        except httpx.HTTPError as e:
            # The details name the endpoint, which is the operator's to know, not the asker's.
            _log.warning("http driver: no answer from %s: %s: %s", url, type(e).__name__, e)
            raise DriverError(f"no answer from the model server ({type(e).__name__})") from e
        return answer


_MAKERS: dict[str, Callable[[WorkerConfig, Mapping[str, str] | None], Driver]] = {
    "echo": lambda config, routes: EchoDriver(),
    "sleep": lambda config, routes: SleepDriver(),
    "command": lambda config, routes: CommandDriver(config.command_driver),
    "http": lambda config, routes: HttpDriver(config.http_driver, routes),
}


@contextlib.asynccontextmanager
async def open_drivers(drivers: Mapping[str, Driver]) -> AsyncIterator[None]:
    """What the drivers keep open while their worker runs (the http driver's clients), open
    until the block ends."""
    async with contextlib.AsyncExitStack() as stack:
        for driver in drivers.values():
            if isinstance(driver, HttpDriver):
                await stack.enter_async_context(driver.open())
        yield


def make_drivers(
    config: WorkerConfig, routes: Mapping[str, str] | None = None
) -> dict[str, Driver]:
    """The drivers the operator enabled, by name; a task naming any other gets `disabled_reason`.
    `routes`: the http driver's registered models (model -> endpoint), read at each task."""
    return {name: _MAKERS[name](config, routes) for name in config.drivers}


def disabled_reason(name: str, config: WorkerConfig) -> str | None:
    """None if this worker runs driver `name`; else why not, in words for the task's owner."""
    if name not in KNOWN_DRIVERS:
        return f"unknown driver {name[:64]!r}; drivers: {', '.join(KNOWN_DRIVERS)}"
    if name not in config.drivers:
        return (
            f"driver {name!r} is not enabled on this worker "
            "(its operator enables drivers in [worker] drivers)"
        )
    return None
