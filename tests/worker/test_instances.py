"""A worker's registered Task Instances as its data dir keeps them: across a restart, one
server per model, and a file that is not theirs refused with its path."""

from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path

import pytest
import trio

from p2psched.resources.instance import instance_id
from p2psched.worker.instances import (
    INSTANCES_FILE,
    InstanceBook,
    InstanceError,
    check_address,
    probe,
)

WORKER = bytes(range(32))


def test_registered_instances_outlive_a_restart(tmp_path: Path) -> None:
    book = InstanceBook(tmp_path, WORKER)
    book.add("10.0.0.5", 8100, ("llama-3-8b", "qwen"))
    assert stat.S_IMODE((tmp_path / INSTANCES_FILE).stat().st_mode) == 0o600
    again = InstanceBook(tmp_path, WORKER)
    assert again.models == ("llama-3-8b", "qwen")
    assert again.routes == {
        "llama-3-8b": "http://10.0.0.5:8100/v1/completions",
        "qwen": "http://10.0.0.5:8100/v1/completions",
    }
    found = again.find(instance_id(WORKER, "qwen"))
    assert found is not None and found.model == "qwen"
    again.remove(found)
    assert InstanceBook(tmp_path, WORKER).models == ("llama-3-8b",)


def test_a_model_goes_to_one_server_and_a_server_registered_again_lists_anew(
    tmp_path: Path,
) -> None:
    book = InstanceBook(tmp_path, WORKER)
    book.add("::1", 8100, ("a", "b"))
    assert book.routes["a"] == "http://[::1]:8100/v1/completions"
    with pytest.raises(InstanceError, match="'a' is already served by Task Instance"):
        book.add("127.0.0.1", 9000, ("a",))
    book.add("::1", 8100, ("b", "c"))  # it serves other models now
    assert book.models == ("b", "c") and "a" not in book.routes


def test_a_file_that_is_not_theirs_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / INSTANCES_FILE).write_text('{"instances": [{"host": "x y", "port": 1}]}')
    with pytest.raises(InstanceError, match=INSTANCES_FILE):
        InstanceBook(tmp_path, WORKER)


@pytest.mark.parametrize(
    ("host", "port", "why"),
    [("a/b", 80, "host name"), ("user@h", 80, "host name"), ("h", 0, "1..65535")],
)
def test_an_address_that_is_no_address_is_refused(host: str, port: int, why: str) -> None:
    with pytest.raises(InstanceError, match=why):
        check_address(host, port)
    check_address("worker1.example.com", 8100)
    check_address("192.168.1.100", 8100)


async def test_a_server_that_answers_a_byte_at_a_time_is_refused_in_bounded_time() -> None:
    # The probe's timeout is httpx's, per read: a server that sends a byte of its model list
    # before each read would time out keeps /ti/register (and its request) open for good.
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            while not stop.wait(0.2):
                conn.sendall(b"1\r\n \r\n")

    threading.Thread(target=drip, daemon=True).start()
    try:
        with trio.fail_after(20):  # the probe's own 1 s, many times over
            with pytest.raises(InstanceError, match="Health check failed"):
                await probe("127.0.0.1", listener.getsockname()[1], timeout_s=1.0)
    finally:
        stop.set()
        listener.close()
