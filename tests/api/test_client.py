"""The CLI's API client against a server that closes kept-alive connections, as the node's
does after 5 s idle: a GET asked on a connection the server closed is asked again on a new
one, in a new session whose server proves itself again; a POST is not (it may have been
taken), and says the node closed the connection."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psched.api.client import ControlClient, NodeUnreachable

ROOT = Path(__file__).parents[2]  # (the server imports p2psched, as installed or from here)

# Opens a session holding the token "token" on each connection, answers the connection's first
# other request if it is signed in it (keeping it alive, by its headers), then closes it
# without a word, as a server does to a connection it found idle.
SERVER = r"""
import json, socket, sys, time
from urllib.parse import parse_qs, urlsplit
from p2psched.api.sessions import SignedSessions
sessions = SignedSessions("token")
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
calls = 0
while True:
    c, _ = s.accept()
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            more = c.recv(65536)
            if not more:
                break
            data += more
        if b"\r\n\r\n" not in data:
            break
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        method, raw_target = lines[0].split(" ")[:2]
        target = urlsplit(raw_target)
        fields = dict(line.split(": ", 1) for line in lines[1:])
        status = b"200 OK"
        if target.path == "/v1/session":
            nonce = bytes.fromhex(parse_qs(target.query)["nonce"][0])
            opened = sessions.open(nonce, time.monotonic())
            answer = {"session": opened.session, "proof": opened.proof}
        else:
            claim = sessions.claim(fields.get("authorization", ""), time.monotonic())
            refused = claim if isinstance(claim, str) else sessions.admit(
                claim, method, raw_target.encode(), b"", time.monotonic())
            if refused is None:
                calls += 1
                answer = {"calls": calls}
            else:
                status, answer = b"401 Unauthorized", {"message": refused}
        body = json.dumps(answer).encode()
        head = b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        c.sendall(head + b"content-length: %d\r\n\r\n" % len(body) + body)
        if target.path != "/v1/session":
            break
    c.close()
"""


@pytest.fixture
def closing_server() -> Iterator[str]:
    with subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, cwd=ROOT
    ) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.kill()


def test_a_get_on_a_connection_the_server_closed_is_asked_again(closing_server: str) -> None:
    with ControlClient(closing_server, "token") as client:
        assert client.get("/v1/node") == {"calls": 1}
        assert client.get("/v1/node") == {"calls": 2}  # on a new connection
        assert client.get("/v1/jobs", state="queued") == {"calls": 3}


def test_a_post_is_not_sent_twice(closing_server: str) -> None:
    with ControlClient(closing_server, "token") as client:
        assert client.get("/v1/node") == {"calls": 1}
        with pytest.raises(NodeUnreachable, match="closed the connection"):
            client.post("/v1/jobs", {"spec": {}})
        assert client.get("/v1/node") == {"calls": 2}  # the POST reached no handler


def test_a_node_that_is_gone_is_unreachable() -> None:
    with ControlClient("http://127.0.0.1:9", "token", timeout=5) as client:
        with pytest.raises(NodeUnreachable):
            client.get("/v1/node")


def test_a_server_that_cannot_prove_it_holds_the_token_never_hears_it(closing_server: str) -> None:
    with ControlClient(closing_server, "another token") as client:
        with pytest.raises(NodeUnreachable, match="did not prove"):
            client.get("/v1/node")
    with ControlClient(closing_server, "token") as client:
        assert client.get("/v1/node") == {"calls": 1}  # the refused one reached no handler
