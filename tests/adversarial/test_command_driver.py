"""Attacks on a worker through its command driver, run for real: a task that tries to read the
worker's key or API token, and tasks that try to exhaust its processes, memory, disk or reach
the network. Each must end as a failed task (or one that found nothing) while the driver keeps
serving: the next honest task succeeds.

The fake data dir is world-readable on purpose: what keeps it from a task is that the sandbox
does not contain it, not its permissions."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psched.worker.config import CommandDriverConfig
from p2psched.worker.drivers import CommandDriver, DriverError, DriverTask

KEY = b"SECRET-ed25519-key-0123456789abcdef"
TOKEN = "SECRET-api-token-fedcba9876543210"
HONEST = {"program": "wc", "params": {"lines": True}, "stdin": "a\nb\n"}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A worker's data dir with a known key and token, readable by anyone on the host."""
    path = Path(tempfile.mkdtemp(prefix="p2psched-data-"))
    path.chmod(0o755)
    (path / "identity.key").write_bytes(KEY)
    (path / "api.token").write_text(TOKEN)
    for name in ("identity.key", "api.token"):
        (path / name).chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scratches() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def driver(**settings: Any) -> CommandDriver:
    """The README's wc, and an operator's python3 taking a script file (the sandbox is what
    stands between that script and the worker); stderr shown so that it is searched too."""
    programs = {
        "wc": {
            "argv": ["/usr/bin/wc"],
            "params": {"lines": {"type": "flag", "arg": "-l"}, "file": {"type": "file"}},
        },
        "py": {"argv": ["/usr/bin/python3"], "params": {"script": {"type": "file"}}},
    }
    return CommandDriver(CommandDriverConfig(programs=programs, stderr=True, **settings))


async def run(
    d: CommandDriver, scratches: list[Path], value: Any, *, timeout_s: float = 30.0
) -> str:
    """Everything the task's owner gets back, result or refusal, as one text."""
    scratch = Path(tempfile.mkdtemp(prefix="task-"))
    scratches.append(scratch)
    try:
        return repr(await d.run(DriverTask("t", value, None, timeout_s, scratch), lambda f: None))
    except DriverError as e:
        return f"DriverError: {e}"


def script(code: str) -> dict[str, Any]:
    return {"program": "py", "params": {"script": "s.py"}, "files": {"s.py": code}}


def assert_nothing_leaked(said: str) -> None:
    assert KEY.decode() not in said and TOKEN not in said
    assert "SECRET" not in said  # not even part of either


async def assert_still_serving(d: CommandDriver, scratches: list[Path]) -> None:
    assert await run(d, scratches, HONEST) == "{'exit_code': 0, 'stdout': '2\\n', 'stderr': ''}"


# --- the key theft of issue 14, and its variants ---


@pytest.mark.parametrize(
    "attack",
    [
        # the job that stole the key with the README's own allowlist
        {"program": "wc", "args": ["--files0-from={data}/identity.key"]},
        {"program": "wc", "args": ["{data}/api.token"]},
        {"program": "wc", "params": {"files0-from": "{data}/identity.key"}},
        {"program": "wc", "params": {"file": "{data}/identity.key"}},
        {"program": "wc", "params": {"file": "../../{data}/identity.key"}},
        {"program": "wc", "params": {"file": "--files0-from=x"}},
        {"program": "wc", "files": {"../identity.key": "x"}},
    ],
)
async def test_wc_gives_nothing_of_the_key_or_token(
    data_dir: Path, scratches: list[Path], attack: dict[str, Any]
) -> None:
    d = driver()
    value = eval(repr(attack).replace("{data}", str(data_dir).lstrip("/")))  # noqa: S307
    said = await run(d, scratches, value)
    assert said.startswith("DriverError: ")
    assert_nothing_leaked(said)
    await assert_still_serving(d, scratches)


async def test_a_link_planted_in_the_scratch_dir_leads_nowhere(
    data_dir: Path, scratches: list[Path]
) -> None:
    d = driver()
    scratch = Path(tempfile.mkdtemp(prefix="task-"))
    scratches.append(scratch)
    (scratch / "key").symlink_to(data_dir / "identity.key")
    task = DriverTask("t", {"program": "wc", "params": {"file": "key"}}, None, 30.0, scratch)
    with pytest.raises(DriverError) as e:
        await d.run(task, lambda f: None)
    assert "not a link" in str(e.value)
    # And a program that follows the link itself finds no such file in its sandbox.
    code = f"import os\nos.symlink({str(data_dir / 'api.token')!r}, 't')\nprint(open('t').read())"
    said = await run(d, scratches, script(code))
    assert "No such file or directory" in said
    assert_nothing_leaked(said)


READS_EVERYTHING = """
import os, sys
data = sys.argv[0] and {data!r}
paths = [data + '/identity.key', data + '/api.token', '/proc/self/environ', '/proc/1/environ',
         '/proc/1/root' + data + '/identity.key', '/proc/1/cwd/../identity.key']
for pid in os.listdir('/proc'):
    if pid.isdigit():
        paths += [f'/proc/{{pid}}/environ', f'/proc/{{pid}}/root{{data}}/identity.key',
                  f'/proc/{{pid}}/cwd/../../{{data}}/api.token']
for path in paths:
    try:
        print(path, open(path, 'rb').read())
    except OSError as e:
        print(path, type(e).__name__)
for root, dirs, files in os.walk('/', onerror=None):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/dev')]
    for name in files:
        if name in ('identity.key', 'api.token'):
            print('found', os.path.join(root, name), open(os.path.join(root, name)).read())
print(sorted(os.listdir('/')), os.environ)
"""


async def test_a_program_looking_everywhere_finds_neither_key_nor_token(
    data_dir: Path, scratches: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2PSCHED_API_TOKEN", TOKEN)  # in the worker's own environment
    d = driver()
    said = await run(d, scratches, script(READS_EVERYTHING.format(data=str(data_dir))))
    assert "'exit_code': 0" in said  # it ran, and looked
    assert "found" not in said
    assert_nothing_leaked(said)
    await assert_still_serving(d, scratches)


# --- exhausting the worker ---


async def test_a_fork_bomb_fails_and_the_worker_keeps_serving(scratches: list[Path]) -> None:
    d = driver(limits={"processes": 16, "cpu_s": 5})
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    said = await run(d, scratches, script(bomb), timeout_s=3.0)
    assert said == "DriverError: timed out after 3s"
    await assert_still_serving(d, scratches)


async def test_a_10_gb_allocation_fails_with_its_reason(scratches: list[Path]) -> None:
    d = driver()
    said = await run(d, scratches, script("b = bytearray(10 << 30)\nprint(len(b))"))
    assert said.startswith("DriverError: 'py' exited with code 1: MemoryError")
    await assert_still_serving(d, scratches)


async def test_a_1_gb_file_fails_with_its_reason(scratches: list[Path]) -> None:
    d = driver(limits={"file_size_mb": 16})
    code = (
        "with open('big', 'wb') as f:\n    for _ in range(1024):\n        f.write(bytes(1 << 20))\n"
    )
    said = await run(d, scratches, script(code))
    assert said.startswith("DriverError: 'py' exited with code 1: OSError: [Errno 27] File too")
    await assert_still_serving(d, scratches)


@pytest.mark.parametrize("where", ["/task", "/tmp"])
async def test_many_files_fill_no_more_than_the_tasks_disk(
    scratches: list[Path], where: str
) -> None:
    """64 files of 8 MiB, each under the file size limit, in the task's cwd or its /tmp: the
    writes stop at `disk_mb`, the task fails with its reason, and nothing is left behind."""
    d = driver(limits={"file_size_mb": 16, "disk_mb": 32})
    code = (
        f"for n in range(64):\n    with open('{where}/f%d' % n, 'wb') as f:\n"
        "        f.write(bytes(8 << 20))\n"
    )
    said = await run(d, scratches, script(code))
    assert said.startswith("DriverError: 'py' exited with code 1: OSError: [Errno 28] No space")
    assert sum(p.stat().st_size for p in scratches[-1].iterdir()) < 1 << 20  # the script only
    await assert_still_serving(d, scratches)


async def test_an_outgoing_connection_fails_and_reaches_no_one(scratches: list[Path]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        d = driver()
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        said = await run(d, scratches, script(code))
        assert said.startswith("DriverError: 'py' exited with code 1: ConnectionRefusedError")
        with pytest.raises(BlockingIOError):
            listener.accept()
    await assert_still_serving(d, scratches)


async def test_with_network_allowed_the_connection_goes_through(scratches: list[Path]) -> None:
    """The check above is the sandbox's, not the test's: with network = true it connects."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        said = await run(driver(network=True), scratches, script(code))
        assert "'exit_code': 0" in said
        connection, _ = listener.accept()
        connection.close()


async def test_a_task_gets_no_more_processes_than_its_limit(scratches: list[Path]) -> None:
    code = (
        "import subprocess\n"
        "started = []\n"
        "for _ in range(40):\n"
        "    try:\n"
        "        started.append(subprocess.Popen(['sleep', '5']))\n"
        "    except OSError:\n"
        "        break\n"
        "print(len(started))\n"
        "for p in started:\n"
        "    p.kill()\n"
    )
    said = await run(driver(limits={"processes": 16}), scratches, script(code))
    started = int(said.split("'stdout': '")[1].split("\\n")[0])
    assert 0 < started < 16


async def test_a_task_spinning_past_its_cpu_seconds_is_stopped_with_its_reason(
    scratches: list[Path],
) -> None:
    d = driver(limits={"cpu_s": 1})
    said = await run(d, scratches, script("while True:\n    pass\n"), timeout_s=20.0)
    assert said == "DriverError: 'py' went over its CPU time limit (1 s)"
    await assert_still_serving(d, scratches)


async def test_a_task_gets_no_more_open_files_than_its_limit(scratches: list[Path]) -> None:
    code = "files = [open('f', 'w') for _ in range(100)]\n"
    said = await run(driver(limits={"open_files": 32}), scratches, script(code))
    assert "OSError: [Errno 24] Too many open files" in said


async def test_tasks_leave_nothing_behind_to_count_against_the_next(scratches: list[Path]) -> None:
    """bwrap, its sandbox's init and the program are three processes: under a limit of four,
    one process left behind by each task (a zombie nobody reaped) would fail the next."""
    d = driver(limits={"processes": 4})
    for _ in range(5):
        await assert_still_serving(d, scratches)
    said = await run(d, scratches, script("import time\ntime.sleep(30)\n"), timeout_s=1.0)
    assert said == "DriverError: timed out after 1s"
    for _ in range(3):
        await assert_still_serving(d, scratches)
