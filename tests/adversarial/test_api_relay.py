"""A local user who listens where the CLI's client dials over TCP and relays every byte to the
real node, recording them, against a real node process: the client's calls work through it,
yet it never sees the token, and nothing it recorded lets it ask the node anything itself (a
recorded request sent again is a replay; its MAC on another path, method or body is wrong)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from p2psched.api import client as client_module
from p2psched.api.client import ApiCallError, ControlClient
from tests.harness.processes import running

IDLE_S = 30.0  # no relayed connection stays quiet this long in a test


class Relay:
    """A listener on loopback that forwards each connection to `target`, keeping what the
    client side sent on each, in order."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sent: list[bytearray] = []  # per connection, what the client sent
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed: the test is over
            node = socket.create_connection(self.target, timeout=IDLE_S)
            client.settimeout(IDLE_S)
            heard = bytearray()
            self.sent.append(heard)
            for args in ((client, node, heard), (node, client, None)):
                thread = threading.Thread(target=_pump, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # (wakes the accept; close alone does not)
        self.listener.close()
        for thread in self._threads:
            thread.join(IDLE_S)


def _pump(source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
    """Copy `source` to `sink` until either closes, then shut both (which ends the other pump)
    and close `source` (the other pump's sink, which it closes as its source)."""
    try:
        while data := source.recv(65536):
            if record is not None:
                record += data
            sink.sendall(data)
    except OSError:
        pass
    for end in (source, sink):
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # (closed already by the other pump)
    source.close()


@contextmanager
def relay_to(url: str) -> Iterator[Relay]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    relay = Relay((host, int(port)))
    thread = threading.Thread(target=relay.serve, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.close()
        thread.join(IDLE_S)


def split_message(stream: bytes) -> tuple[bytes, bytes, int]:
    """The head of the first HTTP message in `stream`, what follows it, and its body's length."""
    head, _, rest = stream.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, rest, length


def requests_in(stream: bytes) -> list[bytes]:
    """The HTTP requests (head and body) one connection carried, in order."""
    found = []
    while stream:
        head, rest, length = split_message(stream)
        found.append(head + b"\r\n\r\n" + rest[:length])
        stream = rest[length:]
    return found


def send_raw(url: str, request: bytes) -> tuple[int, bytes]:
    """One request's bytes, as recorded, straight to the node: its status and body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=IDLE_S) as conn:
        conn.sendall(request)
        answer = read_message(conn, bytearray())
    head, body, _ = split_message(answer)
    return int(head.split(b" ", 2)[1]), body


def retarget(request: bytes, line: bytes, body: bytes | None = None) -> bytes:
    """`request` with its request line replaced (its headers, MAC included, kept), and its body
    if given."""
    head, _, old_body = request.partition(b"\r\n\r\n")
    headers = head.split(b"\r\n")[1:]
    body = old_body if body is None else body
    headers = [h for h in headers if not h.lower().startswith(b"content-length")]
    headers.append(b"content-length: %d" % len(body))
    return b"\r\n".join([line, *headers]) + b"\r\n\r\n" + body


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running gate's TCP API address and token."""
    data = tmp_path / "gate"
    with running("gate", "--listen", "127.0.0.1:0", data=data):
        url = json.loads((data / "api.json").read_text())["url"]
        yield url, (data / "api.token").read_text().strip()


def test_a_relaying_listener_sees_no_token_and_can_ask_nothing_itself(
    node: tuple[str, str],
) -> None:
    url, token = node
    with relay_to(url) as relay:
        with ControlClient(relay.url, token) as client:
            assert client.get("/v1/node")["node_id"]
            assert client.post("/v1/scheduler/set", {"name": "shortest_queue"})
            assert client.get("/v1/scheduler")["strategy"] == "shortest_queue"
    assert len(relay.sent) == 1  # one connection, one session, three signed requests
    seen = bytes(relay.sent[0])
    assert token.encode() not in seen and b"bearer" not in seen.lower()
    opening, info, switch, _ = requests_in(seen)
    assert opening.startswith(b"GET /v1/session?nonce=")
    assert switch.startswith(b"POST /v1/scheduler/set ")

    # What the relay can do with what it saw, straight to the node, in the live session:
    for replayed in (info, switch):
        status, answer = send_raw(url, replayed)
        assert status == 401 and b"replay" in answer
    cases = {  # each signed header of a request sent with something else under it
        "another path": retarget(switch, b"POST /v1/scheduler/predict_mode HTTP/1.1"),
        "another body": retarget(switch, b"POST /v1/scheduler/set HTTP/1.1", b'{"name":"cost"}'),
        "another method": retarget(info, b"DELETE /v1/node HTTP/1.1"),
    }
    for what, forged in cases.items():
        status, answer = send_raw(url, forged)
        assert status == 401, what
    with ControlClient(url, token) as client:
        assert client.get("/v1/scheduler")["strategy"] == "shortest_queue"  # unmoved


def test_a_client_whose_session_was_crowded_out_opens_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Strangers on the host may open sessions until the store drops a client's: that costs the
    # client one more round trip, on the same connection, and its call goes through once.
    monkeypatch.setattr(client_module, "IDLE_S", 600.0)  # (the connection is kept, however slow)
    data = tmp_path / "gate"
    with running("gate", "--listen", "127.0.0.1:0", "--api-sessions", "1", data=data):
        url = json.loads((data / "api.json").read_text())["url"]
        token = (data / "api.token").read_text().strip()
        with relay_to(url) as relay, ControlClient(relay.url, token) as client:
            assert client.post("/v1/scheduler/set", {"name": "round_robin"})
            with ControlClient(url, token) as stranger:  # another session: the first's is gone
                assert stranger.get("/v1/node")["node_id"]
            assert client.post("/v1/scheduler/set", {"name": "cost"})
            assert client.get("/v1/scheduler")["strategy"] == "cost"
    asked = [r.split(b" ", 2)[1] for r in requests_in(bytes(relay.sent[0]))]
    assert len(relay.sent) == 1
    assert [a.split(b"?")[0] for a in asked] == [
        b"/v1/session",
        b"/v1/scheduler/set",
        b"/v1/scheduler/set",  # refused: its session was dropped
        b"/v1/session",
        b"/v1/scheduler/set",
        b"/v1/scheduler",
    ]


def read_message(conn: socket.socket, buffered: bytearray) -> bytes:
    """The next whole HTTP message (head and Content-Length body) on `conn`, past `buffered`."""
    while (
        b"\r\n\r\n" not in buffered
        or len(split_message(bytes(buffered))[1]) < (split_message(bytes(buffered))[2])
    ):
        more = conn.recv(65536)
        assert more, "the other end closed the connection before a whole message"
        buffered += more
    head, rest, length = split_message(bytes(buffered))
    del buffered[:]
    buffered += rest[length:]
    return head + b"\r\n\r\n" + rest[:length]


FORGED_401 = json.dumps(
    {"status": "error", "message": "signed request refused: unknown or expired session"}
).encode()


def forge_session_gone(client: socket.socket, node_url: str, answered: list[bytes]) -> None:
    """A relay that passes the client's requests to the node one by one, but answers the first
    POST on a connection already used with a 401 of its own, after the node ran it; `answered`
    gets each request line with the node's own status."""
    host, port = node_url.removeprefix("http://").rsplit(":", 1)
    with client, socket.create_connection((host, int(port)), timeout=IDLE_S) as node:
        client.settimeout(IDLE_S)
        from_client, from_node = bytearray(), bytearray()
        forged = False
        for n in range(8):  # (a handful of requests: the test's)
            try:
                request = read_message(client, from_client)
            except (AssertionError, OSError):
                return  # the client is done
            node.sendall(request)
            answer = read_message(node, from_node)
            line = request.split(b"\r\n", 1)[0]
            answered.append(line + b" -> " + answer.split(b" ", 2)[1])
            if n > 0 and line.startswith(b"POST ") and not forged:
                forged = True
                answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                answer += b"content-length: %d\r\n\r\n%s" % (len(FORGED_401), FORGED_401)
            client.sendall(answer)


def test_a_relay_cannot_have_the_client_send_a_request_twice_by_forging_a_refusal(
    node: tuple[str, str],
) -> None:
    # The node ran the POST; the relay tells the client its session was gone. A client that
    # believed it would sign the POST again, in a new session, and the node would run it twice.
    url, token = node
    listener = socket.create_server(("127.0.0.1", 0))
    answered: list[bytes] = []
    with listener:
        with ControlClient(f"http://127.0.0.1:{listener.getsockname()[1]}", token) as client:
            relaying = threading.Thread(
                target=lambda: forge_session_gone(listener.accept()[0], url, answered),
                daemon=True,
            )
            relaying.start()
            assert client.get("/v1/node")["node_id"]
            with pytest.raises(ApiCallError, match="unknown or expired session"):
                client.post("/v1/scheduler/set", {"name": "cost"})
            client.close()
            relaying.join(IDLE_S)
    ran = [a for a in answered if a.startswith(b"POST /v1/scheduler/set ")]
    assert ran == [b"POST /v1/scheduler/set HTTP/1.1 -> 200"]
