"""The operator's schedulers file, followed on trio's fake clock while it is edited: what it
says is applied before the worker starts and within a second of each edit (one that keeps its
size included), a bad line is logged and left out, and a file gone keeps the lists last read."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio

from p2psched.worker.policy import SchedulerPolicy
from p2psched.worker.schedulers_file import follow_schedulers_file

A, B, C = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


async def test_the_file_is_followed_as_its_operator_edits_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "p2psched.worker.schedulers_file")
    path = tmp_path / "schedulers.txt"
    path.write_text(f"deny {A.hex()}\n")
    inline = SchedulerPolicy(deny=frozenset({C}))
    applied: list[SchedulerPolicy] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(follow_schedulers_file, path, inline, applied.append)
        assert applied == [SchedulerPolicy(deny=frozenset({A, C}))]  # before it started
        await trio.sleep(10)
        assert len(applied) == 1  # unchanged: nothing new to apply
        # An edit within the file system's clock granularity: the same size, time and inode.
        stamp = path.stat().st_mtime_ns
        path.write_text(f"deny {B.hex()}\n")
        os.utime(path, ns=(stamp, stamp))
        await trio.sleep(1.5)
        assert applied[-1].deny == {B, C}
        path.write_text(f"allow {A.hex()}\nallow them all\n")
        await trio.sleep(1.5)
        assert applied[-1] == SchedulerPolicy(allow=frozenset({A}), deny=frozenset({C}))
        assert "line 2: not 'allow <node id>' or 'deny <node id>': left out" in caplog.text
        path.unlink()
        await trio.sleep(5)
        assert len(applied) == 3  # the lists last read stay in force
        assert caplog.text.count("cannot be read") == 1  # said once, not every second
        path.write_text(f"deny {A.hex()}\n")
        await trio.sleep(1.5)
        assert applied[-1].deny == {A, C}
        nursery.cancel_scope.cancel()
