"""The task drivers: echo, sleep (fake clock), command (real processes), http (a real local
server), which drivers exist on a worker, and drivers made from a worker's config."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched.worker import sandbox
from p2psched.worker.config import CommandDriverConfig, HttpDriverConfig, WorkerConfig, load_config
from p2psched.worker.drivers import (
    CommandDriver,
    DriverError,
    DriverTask,
    EchoDriver,
    HttpDriver,
    SleepDriver,
    disabled_reason,
    make_drivers,
)

PYTHON = "/usr/bin/python3"
PROGRAMS: dict[str, Any] = {
    "echo": {
        "argv": ["/bin/echo"],
        "params": {
            "count": {"type": "integer", "arg": "--count", "min": 1, "max": 9},
            "first": {"type": "string", "max_length": 16},
            "second": {"type": "string"},
        },
    },
    "wc": {
        "argv": ["/usr/bin/wc"],
        "params": {"bytes": {"type": "flag", "arg": "-c"}, "file": {"type": "file"}},
    },
    "py": {"argv": [PYTHON], "params": {"script": {"type": "file"}}},
}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A task's scratch directory as the worker makes it: new, under /tmp (a root worker's
    tasks run as nobody, who must reach it; pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="task-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def py(script: str, **more: Any) -> dict[str, Any]:
    """A command task running `script` with python3, sent as its input file."""
    return {"program": "py", "params": {"script": "s.py"}, "files": {"s.py": script}, **more}


def make_task(
    input: Any, scratch: Path, *, timeout_s: float = 30.0, model: str | None = None
) -> DriverTask:
    return DriverTask("t1", input, model, timeout_s, scratch)


def ignore(fraction: float) -> None:
    pass


def command(max_output_bytes: int = 1 << 20, **settings: Any) -> CommandDriver:
    return CommandDriver(
        CommandDriverConfig(programs=PROGRAMS, max_output_bytes=max_output_bytes, **settings)
    )


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# A program that starts a child, writes both pids where the test can find them, and waits.
SPAWNS_AND_WAITS = (
    "import os, subprocess, time\nchild = subprocess.Popen(['sleep', '30.25'])\ntime.sleep(30)\n"
)


def sandboxed_sleepers() -> list[int]:
    """Host pids of the `sleep 30.25` that SPAWNS_AND_WAITS starts (its pid in the sandbox's
    namespace means nothing here)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and alive(int(entry.name)):
                if (entry / "cmdline").read_bytes() == b"sleep\x0030.25\x00":
                    found.append(int(entry.name))
        except OSError:
            pass
    return found


# --- echo and sleep ---


async def test_echo_returns_the_input_unchanged(tmp_path: Path) -> None:
    value = {"a": [1, 2.5, "x", None, b"\x00"], "b": {"c": True}}
    assert await EchoDriver().run(make_task(value, tmp_path), ignore) == value


async def test_sleep_takes_its_time_and_reports_progress(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[tuple[float, float]] = []
    start = trio.current_time()
    result = await SleepDriver().run(
        make_task({"seconds": 100}, tmp_path, timeout_s=1000),
        lambda f: seen.append((f, trio.current_time() - start)),
    )
    assert result == {"slept": 100}
    assert trio.current_time() - start == pytest.approx(100)
    assert [f for f, _ in seen] == pytest.approx([i / 10 for i in range(1, 11)])
    assert [t for _, t in seen] == pytest.approx([10.0 * i for i in range(1, 11)])


async def test_a_short_sleep_reports_once_at_the_end(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[float] = []
    assert await SleepDriver().run(make_task({"seconds": 0.25}, tmp_path), seen.append) == {
        "slept": 0.25
    }
    assert seen == [1.0]


async def test_sleep_past_the_time_limit_times_out(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    with pytest.raises(DriverError, match=r"^timed out after 10s$"):
        await SleepDriver().run(make_task({"seconds": 100}, tmp_path, timeout_s=10), ignore)
    assert trio.current_time() - start == pytest.approx(10)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (5, "input must be a mapping with seconds"),
        ({}, "input.seconds is missing"),
        ({"seconds": 1, "minutes": 2}, "unknown field 'minutes'"),
        ({"seconds": -1}, "finite number >= 0"),
        ({"seconds": "1"}, "finite number >= 0"),
        ({"seconds": True}, "finite number >= 0"),
        ({"seconds": float("inf")}, "finite number >= 0"),
    ],
)
async def test_sleep_refuses_bad_input(tmp_path: Path, value: Any, says: str) -> None:
    with pytest.raises(DriverError, match=says):
        await SleepDriver().run(make_task(value, tmp_path), ignore)


async def test_a_cancelled_task_is_cancelled_not_failed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.move_on_after(5) as scope:
        await SleepDriver().run(make_task({"seconds": 100}, tmp_path), ignore)
    assert scope.cancelled_caught


async def test_an_unexpected_exception_becomes_a_one_line_driver_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(fraction: float) -> None:
        raise RuntimeError("first line\nsecond line")

    with pytest.raises(DriverError) as e:
        await SleepDriver().run(make_task({"seconds": 1}, tmp_path), broken)
    assert str(e.value) == "sleep driver failed: RuntimeError: first line second line"
    # The operator gets the traceback of what is a bug, not the task's fault.
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None


async def test_a_time_limit_that_is_not_positive_is_refused(tmp_path: Path) -> None:
    for timeout in (0.0, -1.0, float("nan")):
        with pytest.raises(DriverError, match="timeout_s must be more than 0"):
            await SleepDriver().run(make_task({"seconds": 1}, tmp_path, timeout_s=timeout), ignore)


# --- command: real processes, in the sandbox ---


async def test_command_runs_a_declared_program_with_its_parameters(scratch: Path) -> None:
    task = {"program": "wc", "params": {"bytes": True}, "stdin": "héllo"}
    result = await command().run(make_task(task, scratch), ignore)
    assert result == {"exit_code": 0, "stdout": "6\n", "stderr": ""}  # bytes of UTF-8


async def test_options_come_first_then_dash_dash_and_the_positional_values(scratch: Path) -> None:
    params = {"second": "b", "count": 3, "first": "a"}
    result = await command().run(make_task({"program": "echo", "params": params}, scratch), ignore)
    assert result["stdout"] == "--count 3 -- a b\n"  # in the order the operator declared them


async def test_command_reads_the_files_the_task_sent(scratch: Path) -> None:
    task = {"program": "wc", "params": {"file": "in.txt"}, "files": {"in.txt": "one two\n"}}
    result = await command().run(make_task(task, scratch), ignore)
    assert result["stdout"].split() == ["1", "2", "8", "in.txt"]


async def test_command_stdin_it_does_not_read_is_no_error(scratch: Path) -> None:
    # More than a pipe holds: writing it fails once the program exits without reading it.
    task = make_task(py("pass", stdin="x" * (1 << 20)), scratch)
    assert (await command().run(task, ignore))["exit_code"] == 0


async def test_parameter_values_reach_the_program_literally(scratch: Path) -> None:
    (scratch / "victim").write_text("still here")
    params = {"first": "$(id);rm victim", "second": "`whoami` * | $HOME '\" x\ny"}
    result = await command().run(make_task({"program": "echo", "params": params}, scratch), ignore)
    assert result["stdout"] == f"-- {params['first']} {params['second']}\n"
    assert (scratch / "victim").read_text() == "still here"


async def test_command_runs_in_its_sandbox_with_a_minimal_environment(scratch: Path) -> None:
    code = "import os, json; print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))"
    result = await command().run(make_task(py(code), scratch), ignore)
    seen = json.loads(result["stdout"])
    assert seen["cwd"] == "/task"
    assert set(seen["env"]) - {"PWD"} == {"PATH", "HOME", "TMPDIR", "LANG", "CUDA_VISIBLE_DEVICES"}
    assert seen["env"]["HOME"] == "/task"
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == ""  # given no GPU, it sees none


async def test_command_refuses_a_program_that_is_not_declared(scratch: Path) -> None:
    with pytest.raises(DriverError) as e:
        await command().run(make_task({"program": "sh"}, scratch), ignore)
    assert str(e.value) == "program 'sh' is not allowed on this worker; allowed: echo, py, wc"
    with pytest.raises(DriverError, match="allowed: none"):
        await CommandDriver(CommandDriverConfig()).run(
            make_task({"program": "echo"}, scratch), ignore
        )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({}, "input.program is missing"),
        ({"program": "/bin/echo"}, "'/bin/echo' is not allowed"),
        ({"program": 3}, "input.program must be a name"),
        ({"program": "echo", "args": ["-l"]}, "input.args: free arguments are not taken"),
        ({"program": "echo", "params": ["a"]}, "input.params must be a mapping"),
        ({"program": "echo", "params": {"first": 1.5}}, "input.params must be"),
        ({"program": "echo", "params": {"third": "x"}}, r"params.third: unknown parameter; "),
        ({"program": "echo", "params": {"count": 10}}, r"params.count: must be 1..9, not 10"),
        ({"program": "echo", "params": {"count": "3"}}, r"params.count: must be a whole number"),
        ({"program": "echo", "params": {"first": "-n"}}, r"params.first: must not start with '-'"),
        ({"program": "echo", "params": {"first": "x" * 17}}, r"params.first: must be text of"),
        ({"program": "wc", "params": {"bytes": "yes"}}, r"params.bytes: must be true or false"),
        ({"program": "wc", "params": {"file": "gone"}}, r"params.file: must name a file the task"),
        ({"program": "wc", "params": {"file": "../x"}}, r"params.file: must be a file name inside"),
        ({"program": "wc", "files": {"/etc/passwd": "x"}}, r"input.files must be"),
        ({"program": "echo", "stdin": b"x"}, "input.stdin must be text"),
        ({"program": "echo", "env": {}}, "unknown field 'env'"),
    ],
)
async def test_command_refuses_bad_input(scratch: Path, value: Any, says: str) -> None:
    with pytest.raises(DriverError, match=says):
        await command().run(make_task(value, scratch), ignore)


async def test_a_file_parameter_must_not_be_a_link(scratch: Path) -> None:
    (scratch / "in.txt").symlink_to("/etc/hostname")
    with pytest.raises(DriverError, match="params.file: must name a plain file, not a link"):
        await command().run(
            make_task({"program": "wc", "params": {"file": "in.txt"}}, scratch), ignore
        )


FAILS = (
    "import sys\n"
    "print('some output')\n"
    "print('warming up', file=sys.stderr)\n"
    "print('ValueError: bad shape', file=sys.stderr)\n"
    "sys.exit(3)\n"
)


async def test_a_non_zero_exit_is_a_failure_without_stderr_by_default(scratch: Path) -> None:
    with pytest.raises(DriverError) as e:
        await command().run(make_task(py(FAILS), scratch), ignore)
    assert str(e.value) == "'py' exited with code 3"


async def test_with_stderr_on_a_failure_says_its_last_line(scratch: Path) -> None:
    with pytest.raises(DriverError) as e:
        await command(stderr=True).run(make_task(py(FAILS), scratch), ignore)
    assert str(e.value) == "'py' exited with code 3: ValueError: bad shape"


async def test_a_failed_programs_hidden_stderr_is_logged_within_a_reason_s_length(
    scratch: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The task writes its stderr, up to the output cap: the operator's log gets a line of it,
    not a megabyte per failed task."""
    code = "import sys; sys.stderr.write('x' * 500_000); sys.exit(1)"
    caplog.set_level(logging.INFO, logger="p2psched.worker.drivers")
    with pytest.raises(DriverError, match="exited with code 1$"):
        await command().run(make_task(py(code), scratch), ignore)
    [said] = [r.getMessage() for r in caplog.records if "stderr ended" in r.getMessage()]
    assert "xxx" in said and len(said) < 600


async def test_stderr_comes_back_only_when_the_operator_says_so(scratch: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    hidden = await command().run(make_task(py(code), scratch), ignore)
    (scratch / "s.py").unlink()
    shown = await command(stderr=True).run(make_task(py(code), scratch), ignore)
    assert (hidden["stdout"], hidden["stderr"]) == ("out\n", "")
    assert (shown["stdout"], shown["stderr"]) == ("out\n", "err\n")


async def test_a_program_killed_by_a_signal_says_which(scratch: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    with pytest.raises(DriverError, match=r"^'py' (was killed by SIGTERM|exited with code 143)$"):
        await command().run(make_task(py(code), scratch), ignore)


async def test_command_output_is_decoded_with_replacement(scratch: Path) -> None:
    code = "import sys; sys.stdout.buffer.write(b'ok \\xff')"
    result = await command().run(make_task(py(code), scratch), ignore)
    assert result["stdout"] == "ok \ufffd"


async def test_command_past_its_time_limit_is_killed_with_what_it_started(scratch: Path) -> None:
    task = make_task(py(SPAWNS_AND_WAITS), scratch, timeout_s=3.0)
    started: list[int] = []

    async def watch() -> None:  # (what it writes stays in its sandbox: its child is seen here)
        while not started:
            started.extend(sandboxed_sleepers())
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        with pytest.raises(DriverError, match=r"^timed out after 3s$"):
            await command().run(task, ignore)
        nursery.cancel_scope.cancel()
    assert started
    with trio.move_on_after(5):  # SIGKILL is delivered asynchronously; a bound, not a test
        while sandboxed_sleepers():
            await trio.sleep(0.01)
    assert sandboxed_sleepers() == []


async def test_a_cancelled_command_is_killed_with_what_it_started(scratch: Path) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(command().run, make_task(py(SPAWNS_AND_WAITS), scratch), ignore)
        with trio.fail_after(20):
            while not sandboxed_sleepers():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    with trio.move_on_after(5):
        while sandboxed_sleepers():
            await trio.sleep(0.01)
    assert sandboxed_sleepers() == []


async def test_a_command_may_print_up_to_its_limit(scratch: Path) -> None:
    code = "import sys; sys.stdout.write('x' * 1000); sys.stderr.write('y' * 1000)"
    result = await command(max_output_bytes=1000, stderr=True).run(
        make_task(py(code), scratch), ignore
    )
    assert result["stdout"] == "x" * 1000 and result["stderr"] == "y" * 1000


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_a_command_printing_past_its_limit_is_stopped(scratch: Path, stream: str) -> None:
    code = f"import sys\nwhile True: sys.{stream}.write('x' * 1000)\n"
    with pytest.raises(DriverError, match=rf"^output over 1000 bytes on {stream}$"):
        await command(max_output_bytes=1000).run(make_task(py(code), scratch), ignore)


async def test_a_declared_program_that_went_away_cannot_start(scratch: Path) -> None:
    program = scratch / "tool"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    config = CommandDriverConfig(programs={"tool": {"argv": [str(program)]}}, sandbox="none")
    driver = CommandDriver(config)
    program.unlink()
    with pytest.raises(DriverError, match="'tool' exited with code 1"):
        await driver.run(make_task({"program": "tool"}, scratch), ignore)


# --- the sandbox: a worker that cannot build one refuses to start ---


def test_without_bwrap_the_command_driver_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    with pytest.raises(
        sandbox.SandboxError, match=r"apt-get install bubblewrap.*sandbox = \"none\""
    ):
        CommandDriver(CommandDriverConfig())


def test_where_bwrap_cannot_make_namespaces_the_driver_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox, "_probe", lambda network: "No permissions to create new namespace")
    with pytest.raises(sandbox.SandboxError, match=r"No permissions.*unprivileged_userns_clone"):
        CommandDriver(CommandDriverConfig())


def test_a_program_the_sandbox_does_not_show_is_refused_at_start(scratch: Path) -> None:
    program = scratch / "tool"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    config = CommandDriverConfig(programs={"tool": {"argv": [str(program)]}})
    with pytest.raises(
        sandbox.SandboxError, match=r"programs.tool: .* is outside what the sandbox"
    ):
        CommandDriver(config)


async def test_sandbox_none_runs_unconfined_and_warns_on_every_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, scratch: Path
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    for _ in range(2):
        driver = command(sandbox="none")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "WITHOUT a sandbox" in warnings[0].getMessage()
    result = await driver.run(make_task({"program": "wc", "stdin": "abc"}, scratch), ignore)
    assert result["stdout"].split() == ["0", "1", "3"]  # unconfined, but it ran


# --- http: a real server on 127.0.0.1 ---

Request = tuple[str, dict[str, str], bytes]  # request line, headers, body


def http_response(status: int, body: bytes, *, content_length: bool = True) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n"
    if content_length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


Answer = bytes | Callable[[trio.SocketStream], Awaitable[None]] | None


async def serve_http(nursery: trio.Nursery, answer: Answer) -> tuple[str, list[Request]]:
    """An HTTP server: its base URL, and the requests it received.

    It sends `answer` (bytes), or lets `answer` (a function) write to the connection, or with
    `answer` None reads the request and never answers."""
    seen: list[Request] = []

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        line, *fields = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
        while len(body) < int(headers.get("content-length", "0")):
            body += await stream.receive_some(65536)
        seen.append((line, headers, body))
        try:
            if answer is None:
                await trio.sleep_forever()
            elif isinstance(answer, bytes):
                await stream.send_all(answer)
            else:
                await answer(stream)
        except trio.BrokenResourceError:
            pass  # the client hung up before the whole answer went out, as a size cap does

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}", seen


class _OneTask:
    """An http driver opened for each task it runs (as a worker opens it for all of them)."""

    def __init__(self, driver: HttpDriver) -> None:
        self.driver = driver

    async def run(self, task: DriverTask, progress: Callable[[float], None]) -> Any:
        async with self.driver.open():
            return await self.driver.run(task, progress)


def http(endpoints: dict[str, str], **settings: Any) -> _OneTask:
    return _OneTask(HttpDriver(HttpDriverConfig(endpoints=endpoints, **settings)))


def sse(*events: bytes) -> bytes:
    """A server-sent event stream of `events` (each one `data:` line), as a model server
    streams an answer: no length, and the end of the connection ends it."""
    body = b"".join(b"data: " + e + b"\n\n" for e in events)
    head = b"HTTP/1.1 200 X\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    return head + body


async def test_http_streams_each_event_as_a_partial_result_and_answers_them_all(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    chunks = [{"choices": [{"delta": {"content": w}}]} for w in ("Hel", "lo", "!")]
    events = [json.dumps(c).encode() for c in chunks]
    base, seen = await serve_http(nursery, sse(*events, b"[DONE]", b'{"after": "done"}'))
    parts: list[Any] = []
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    task = DriverTask("t1", body, "m", 30.0, tmp_path, parts.append)
    assert await http({"m": f"{base}/v1"}).run(task, ignore) == chunks
    assert parts == chunks  # each as it came, and the same as the whole
    [(line, headers, _)] = seen
    assert line == "POST /v1/chat/completions HTTP/1.1"
    assert headers["accept"] == "text/event-stream"


async def test_http_a_stream_over_the_limit_fails(tmp_path: Path, nursery: trio.Nursery) -> None:
    base, _ = await serve_http(nursery, sse(*[b'{"text": "' + b"x" * 500 + b'"}'] * 10))
    task = DriverTask("t1", {"prompt": "p", "stream": True}, "m", 30.0, tmp_path)
    with pytest.raises(DriverError, match=r"^response over 2000 bytes$"):
        await http({"m": base}, max_response_bytes=2000).run(task, ignore)


async def test_http_one_client_serves_every_task_while_the_driver_is_open(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    connections = []

    async def keep_alive(stream: trio.SocketStream) -> None:
        connections.append(stream)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
            while b"\r\n\r\n" in data:  # (the bodies posted here are empty: {})
                head, _, data = data.partition(b"\r\n\r\n")
                data = data[2:]
                await stream.send_all(b"HTTP/1.1 200 X\r\nContent-Length: 2\r\n\r\n[]")

    listeners = await nursery.start(functools.partial(trio.serve_tcp, keep_alive, 0))
    port = listeners[0].socket.getsockname()[1]
    driver = HttpDriver(HttpDriverConfig(endpoints={"m": f"http://127.0.0.1:{port}/x"}))
    async with driver.open():
        for _ in range(3):
            assert await driver.run(make_task({}, tmp_path, model="m"), ignore) == []
    assert len(connections) == 1
    with pytest.raises(RuntimeError, match="only while it is open"):
        await driver.run(make_task({}, tmp_path, model="m"), ignore)


async def test_http_an_endpoints_credentials_go_to_it_alone(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M_KEY", "sk-m-secret")
    base, seen = await serve_http(nursery, http_response(200, b"{}"))
    endpoints = {"m": {"url": f"{base}/v1", "api_key_env": "M_KEY"}, "plain": f"{base}/v1"}
    # A registered Task Instance on the same server takes none either.
    driver = HttpDriver(HttpDriverConfig(endpoints=endpoints), {"ti": f"{base}/v1/completions"})
    async with driver.open():
        for model in ("m", "plain", "ti"):
            await driver.run(make_task({"prompt": "p"}, tmp_path, model=model), ignore)
    assert [headers.get("authorization") for _, headers, _ in seen] == [
        "Bearer sk-m-secret",
        None,
        None,
    ]


async def test_http_posts_the_input_and_returns_the_parsed_answer(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    answer = {"choices": [{"text": "Hello!"}], "usage": {"total_tokens": 7}}
    base, seen = await serve_http(nursery, http_response(200, json.dumps(answer).encode()))
    driver = http({"llama-3-8b": f"{base}/v1/completions", "other": "http://127.0.0.1:9/"})
    body = {"prompt": "Say hello", "max_tokens": 5, "stop": ["\n"]}
    result = await driver.run(make_task(body, tmp_path, model="llama-3-8b"), ignore)
    assert result == answer
    [(line, headers, posted)] = seen
    assert line == "POST /v1/completions HTTP/1.1"
    assert headers["content-type"] == "application/json"
    assert json.loads(posted) == body


@pytest.mark.parametrize("model", ["mistral-7b", None])
async def test_http_a_catch_all_endpoint_serves_other_models(
    tmp_path: Path, nursery: trio.Nursery, model: str | None
) -> None:
    base, seen = await serve_http(nursery, http_response(200, b"[1, 2]"))
    driver = http({"llama-3-8b": "http://127.0.0.1:9/", "*": f"{base}/any"})
    assert await driver.run(make_task({}, tmp_path, model=model), ignore) == [1, 2]
    assert seen[0][0] == "POST /any HTTP/1.1"


async def test_http_an_answer_that_is_not_json_comes_back_as_text(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    base, _ = await serve_http(nursery, http_response(200, b"plain words"))
    result = await http({"m": base}).run(make_task({}, tmp_path, model="m"), ignore)
    assert result == {"text": "plain words"}


async def test_http_an_error_status_fails_with_the_start_of_the_body(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    base, _ = await serve_http(nursery, http_response(500, b"boom: " + b"e" * 300_000))
    with pytest.raises(DriverError) as e:
        await http({"m": base}).run(make_task({}, tmp_path, model="m"), ignore)
    reason = str(e.value)
    assert reason.startswith("the model server answered HTTP 500: boom: eee")
    assert len(reason) == len("the model server answered HTTP 500: ") + 200


@pytest.mark.parametrize("content_length", [True, False])
async def test_http_an_answer_over_the_limit_fails(
    tmp_path: Path, nursery: trio.Nursery, content_length: bool
) -> None:
    big = json.dumps({"text": "x" * 300_000}).encode()
    base, _ = await serve_http(nursery, http_response(200, big, content_length=content_length))
    with pytest.raises(DriverError, match=r"^response over 1000 bytes$"):
        await http({"m": base}, max_response_bytes=1000).run(
            make_task({}, tmp_path, model="m"), ignore
        )


async def test_http_an_endless_answer_is_cut_at_the_limit(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async def endless(stream: trio.SocketStream) -> None:
        await stream.send_all(http_response(200, b"", content_length=False))
        while True:
            await stream.send_all(b"x" * 4096)

    base, _ = await serve_http(nursery, endless)
    with pytest.raises(DriverError, match=r"^response over 100000 bytes$"):
        await http({"m": base}, max_response_bytes=100_000).run(
            make_task({}, tmp_path, model="m"), ignore
        )


async def test_http_an_unknown_model_is_refused_naming_the_served_ones(tmp_path: Path) -> None:
    driver = http({"llama-3-8b": "http://127.0.0.1:9/", "sdxl": "http://127.0.0.1:9/"})
    with pytest.raises(DriverError) as e:
        await driver.run(make_task({}, tmp_path, model="gpt-5"), ignore)
    assert str(e.value) == (
        "this worker serves no endpoint for model 'gpt-5'; models: llama-3-8b, sdxl"
    )
    with pytest.raises(DriverError, match="no endpoint for a task without a model"):
        await driver.run(make_task({}, tmp_path), ignore)


async def test_http_an_unreachable_server_fails_without_naming_where_it_is(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(DriverError) as e:
        await http({"m": url}).run(make_task({}, tmp_path, model="m"), ignore)
    assert str(e.value) == "no answer from the model server (ConnectError)"


@pytest.mark.parametrize(
    ("task_timeout", "config_timeout", "says"), [(5, 120, "5s"), (60, 3, "3s")]
)
async def test_http_keeps_to_the_shorter_time_limit(
    tmp_path: Path,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    task_timeout: float,
    config_timeout: float,
    says: str,
) -> None:
    base, seen = await serve_http(nursery, None)
    driver = http({"m": base}, timeout_s=config_timeout)
    with pytest.raises(DriverError, match=rf"^timed out after {says}$"):
        await driver.run(make_task({}, tmp_path, model="m", timeout_s=task_timeout), ignore)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([1, 2], "input must be a mapping"),
        ({"x": b"bytes"}, "input is not JSON"),
        ({"x": float("nan")}, "input is not JSON"),
    ],
)
async def test_http_refuses_input_it_cannot_post(tmp_path: Path, value: Any, says: str) -> None:
    with pytest.raises(DriverError, match=says):
        await http({"*": "http://127.0.0.1:9/"}).run(make_task(value, tmp_path), ignore)


# --- which drivers a worker has ---


def test_make_drivers_makes_only_the_enabled_ones() -> None:
    assert set(make_drivers(WorkerConfig(drivers=("echo", "sleep")))) == {"echo", "sleep"}
    assert make_drivers(WorkerConfig(drivers=())) == {}
    every = make_drivers(WorkerConfig(drivers=("sleep", "echo", "command", "http")))
    assert {name: d.name for name, d in every.items()} == {
        "sleep": "sleep",
        "echo": "echo",
        "command": "command",
        "http": "http",
    }


def test_disabled_reason_says_why_a_driver_cannot_run_here() -> None:
    config = WorkerConfig(drivers=("echo",))
    assert disabled_reason("echo", config) is None
    assert disabled_reason("command", config) == (
        "driver 'command' is not enabled on this worker "
        "(its operator enables drivers in [worker] drivers)"
    )
    assert disabled_reason("ftp", config) == (
        "unknown driver 'ftp'; drivers: sleep, echo, command, http"
    )


# --- [drivers] in the worker config ---


async def test_a_config_with_driver_settings_makes_working_drivers(
    tmp_path: Path, scratch: Path
) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(
        '[worker]\ndrivers = ["echo", "command", "http"]\n'
        "[drivers.command]\n"
        "max_output_bytes = 5000\n"
        "[drivers.command.programs.wc]\n"
        'argv = ["/usr/bin/wc", "-c"]\n'
        'params.file = { type = "file" }\n'
        "[drivers.http]\n"
        'endpoints = { "llama-3-8b" = "http://127.0.0.1:8000/v1/completions", '
        '"*" = "https://models.example/v1" }\n'
        "timeout_s = 30\n"
    )
    config = load_config(path)
    assert config.command_driver == CommandDriverConfig(
        programs={"wc": {"argv": ["/usr/bin/wc", "-c"], "params": {"file": {"type": "file"}}}},
        max_output_bytes=5000,
    )
    assert config.http_driver == HttpDriverConfig(
        endpoints={
            "llama-3-8b": "http://127.0.0.1:8000/v1/completions",
            "*": "https://models.example/v1",
        },
        timeout_s=30.0,
        max_response_bytes=4 << 20,
    )
    drivers = make_drivers(config)
    assert set(drivers) == {"echo", "command", "http"}
    result = await drivers["command"].run(
        make_task({"program": "wc", "stdin": "abc"}, scratch), ignore
    )
    assert result["stdout"].strip() == "3"
