"""The sleep driver's clock: a deadline is met to the tens of microseconds by a timerfd in
trio's own epoll (not a millisecond late, as trio's rounded wait is), never before it, and a
cancelled wait leaves no file descriptor behind; a test's fake clock is served as trio's."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import pytest
import trio
import trio.testing

from p2psched.worker import timer

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@linux
async def test_a_sleep_ends_on_a_timerfd_and_never_before_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited: list[Any] = []
    real = trio.lowlevel.wait_readable

    async def wait_readable(fd: Any) -> None:
        waited.append(fd)
        await real(fd)

    monkeypatch.setattr(trio.lowlevel, "wait_readable", wait_readable)
    before = _fds()
    for _ in range(5):
        start, deadline = time.monotonic(), trio.current_time() + 0.01
        await timer.sleep_until(deadline)
        assert trio.current_time() >= deadline and time.monotonic() - start >= 0.01
    assert len(waited) == 5 and _fds() == before


@linux
async def test_a_cancelled_sleep_closes_its_timerfd() -> None:
    before = _fds()
    with trio.move_on_after(0.01) as scope:
        await timer.sleep_until(trio.current_time() + 60)
    assert scope.cancelled_caught and _fds() == before


async def test_on_a_fake_clock_it_sleeps_on_that_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    await timer.sleep_until(start + 3600)  # an hour, at once
    assert trio.current_time() == start + 3600
