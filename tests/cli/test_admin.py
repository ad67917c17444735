"""The admin commands of design document 003 (`create-task`, `list-tasks`, `get-task`,
`cancel-task`, `list-workers`) against a devnet's gate, as a user runs them."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from p2psched import devnet
from tests.harness.processes import p2psched


@pytest.mark.parametrize("net", [1], indirect=True)
def test_admin_commands_create_follow_list_and_cancel_tasks(net: devnet.Devnet) -> None:
    gate = ("--data-dir", str(net.folder / "gate"))
    asked = ("--model", "llama-3-8b", "--input", '{"prompt": "hello admin"}')
    out = p2psched("create-task", "--name", "Text Generation", *asked, "--priority", "8", *gate)
    assert out.returncode == 0, out.stderr
    task = out.stdout.split()[0]
    assert re.fullmatch(r"task-[0-9a-f-]{36}", task), out.stdout

    deadline = time.monotonic() + 30
    while "status: completed" not in (shown := p2psched("get-task", task, *gate).stdout):
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    assert "name: Text-Generation" in shown and "priority: 8" in shown
    assert "echo: hello admin" in shown

    # Created and cancelled at once: the devnet's one worker is told to stop it if it had it.
    second = json.loads(p2psched("create-task", *asked, "--json", *gate).stdout)["id"]
    out = p2psched("cancel-task", second, *gate)
    if out.returncode == 0:
        assert out.stdout.split() == [second, "cancelled"]
    else:  # (it completed first: the node says it ended)
        assert f"task {second!r} already ended: completed" in out.stderr
    status = json.loads(p2psched("get-task", second, "--json", *gate).stdout)["status"]
    assert status in ("cancelled", "completed") and (status == "cancelled") == (out.returncode == 0)

    listed = json.loads(p2psched("list-tasks", "--json", *gate).stdout)["tasks"]
    assert [t["id"] for t in listed] == [second, task]
    table = p2psched("list-tasks", "--status", "completed", "--model", "llama-3-8b", *gate).stdout
    assert task in table and (second in table) == (status == "completed")
    assert table.splitlines()[0].split() == ["TASK", "NAME", "MODEL", "STATUS", "PRIORITY"]

    workers = p2psched("list-workers", *gate).stdout
    assert "llama-3-8b" in workers and workers.splitlines()[0].split()[0] == "WORKER"

    unknown = f"task-{uuid.uuid4()}"
    for command in ("get-task", "cancel-task"):
        out = p2psched(command, unknown, *gate)
        assert out.returncode == 2 and unknown in out.stderr, out.stderr
    out = p2psched("create-task", "--model", "llama-3-8b", "--input", "{prompt", *gate)
    assert out.returncode == 2 and "--input is not JSON" in out.stderr
