"""Another user of the same machine against a node and its CLI, as real processes: a server run
as another uid on the TCP port a SIGKILLed node's `api.json` still names, or on a Unix socket
in a directory it can write to, hears nothing of the token; what the node writes is its
owner's alone (a data dir 0700, its files 0600)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from p2psched.api.client import ControlClient, NodeUnreachable
from p2psched.home import private_dir
from tests.harness.processes import p2psched, running

NOBODY = 65534
# The stranger needs the standard library alone, from a Python any user may run (this venv's
# may live under root's home).
SYSTEM_PYTHON = Path("/usr/bin/python3")
# Listens as another user where it is told (a TCP port or a Unix socket path), answers every
# request as a node would, with a proof it cannot make, and prints each connection's bytes.
STRANGER = r"""
import json, os, socket, sys
where = sys.argv[1]
if where.isdigit():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(where)))
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind(where)
    os.chmod(where, 0o777)
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    heard = b""
    try:
        while b"\r\n\r\n" not in heard:
            more = c.recv(65536)
            if not more:
                break
            heard += more
        body = json.dumps({"proof": "00" * 32, "node_id": "ab" * 32}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n" % len(body) + body)
        while more:
            more = c.recv(65536)
            heard += more
    except OSError:
        pass
    print(heard.hex(), flush=True)
    c.close()
"""


@contextmanager
def stranger(where: str) -> Iterator[subprocess.Popen[str]]:
    """The STRANGER server, running as uid nobody."""
    if os.geteuid() != 0 or not SYSTEM_PYTHON.exists():
        pytest.skip(f"playing another local user needs root and {SYSTEM_PYTHON}")
    with subprocess.Popen(
        [str(SYSTEM_PYTHON), "-c", STRANGER, where],
        stdout=subprocess.PIPE,
        text=True,
        user=NOBODY,
        group=NOBODY,
        cwd="/",
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "listening\n"
            yield proc
        finally:
            proc.kill()


def heard(proc: subprocess.Popen[str]) -> list[bytes]:
    """What each connection the stranger took carried (after it is killed)."""
    proc.kill()
    out, _ = proc.communicate(timeout=10)
    return [bytes.fromhex(line) for line in out.split()]


@pytest.fixture
def killed_node(tmp_path: Path) -> Path:
    """The data dir of a gate that was SIGKILLed: its api.json still names its API's port."""
    data = tmp_path / "node"
    with running("gate", "--listen", "127.0.0.1:0", data=data) as (gate, _):
        assert p2psched("gate", "status", "--data-dir", str(data)).returncode == 0
        gate.send_signal(signal.SIGKILL)
        gate.wait(timeout=20)
    return data


def port_of(data: Path) -> str:
    return json.loads((data / "api.json").read_text())["url"].rsplit(":", 1)[1]


def test_a_stale_port_taken_by_another_user_hears_nothing(killed_node: Path) -> None:
    token = (killed_node / "api.token").read_text().strip().encode()
    with stranger(port_of(killed_node)) as other:
        run = p2psched("gate", "status", "--data-dir", str(killed_node), timeout=60)
        assert run.returncode != 0 and "no node runs" in run.stderr
        # The CLI dials the Unix socket, which is gone with the node: not the port at all.
        assert heard(other) == []
    # A node too old to have a socket: its TCP port, which must prove it holds the token first
    # (and would never be sent it: the requests that follow are signed).
    info = json.loads((killed_node / "api.json").read_text())
    del info["socket"]
    (killed_node / "api.json").write_text(json.dumps(info))
    with stranger(port_of(killed_node)) as other:
        run = p2psched("gate", "status", "--data-dir", str(killed_node), timeout=60)
        assert run.returncode != 0 and "no node runs" in run.stderr
        asked = heard(other)
        assert len(asked) == 1 and asked[0].startswith(b"GET /v1/session?nonce=")
        assert token not in asked[0] and b"authorization" not in asked[0].lower()


def test_a_socket_served_by_another_user_hears_nothing() -> None:
    # A data dir others may write to, as a careless copy leaves it (outside pytest's own
    # folders, which nobody else may enter).
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        loose = Path(folder)
        loose.chmod(0o777)
        hears_nothing_on_a_strangers_socket(loose)


def hears_nothing_on_a_strangers_socket(loose: Path) -> None:
    token = "t" * 43
    (loose / "api.token").write_text(token + "\n")
    (loose / "api.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "socket": "api.sock"}))
    with stranger(str(loose / "api.sock")) as other:
        assert ControlClient.find(loose) is None
        with pytest.raises(NodeUnreachable, match="uid 65534"):
            ControlClient("http://127.0.0.1:9", token, data_dir=loose).get("/v1/node")
        assert heard(other) == []


def test_init_makes_the_data_dir_its_owners_alone(tmp_path: Path) -> None:
    data = tmp_path / "new" / "home"
    assert p2psched("init", "--data-dir", str(data)).returncode == 0
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "identity.key").stat().st_mode & 0o777 == 0o600


def test_a_looser_data_dir_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "old"
    data.mkdir()
    data.chmod(0o755)  # as `p2psched init` made it before
    private_dir(data)
    assert data.stat().st_mode & 0o777 == 0o700
    assert "tightened to 0700" in caplog.text


def test_the_api_files_are_the_owners_alone(killed_node: Path) -> None:
    assert killed_node.stat().st_mode & 0o777 == 0o700
    for name in ("api.json", "api.token", "identity.key", "state.db"):
        assert (killed_node / name).stat().st_mode & 0o777 == 0o600, name
