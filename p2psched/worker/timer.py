"""Sleeping until a deadline to the tens of microseconds, not to the millisecond: what a task
of a known duration (the sleep driver's) waits with, so that it takes its time and no more.

Why: trio waits for its next deadline in epoll, whose timeout Python rounds up to a whole
millisecond; a loop that other I/O wakes (a worker's channels) ends its last wait before a
deadline up to a millisecond late, about 1 ms on a 10 ms sleep at the median, measured. On
Linux a timerfd armed for the deadline (CLOCK_MONOTONIC, in nanoseconds) wakes the loop on
time, through the same epoll: no thread, no busy wait.
Promises: `sleep_until` never returns before its deadline, and is cancelled as
`trio.sleep_until` is; elsewhere than Linux, or on a test's `MockClock`, it is that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time

import trio
from trio.testing import MockClock

_CLOCK_MONOTONIC = 1
_TFD_CLOEXEC, _TFD_NONBLOCK, _TFD_TIMER_ABSTIME = 0o2000000, 0o4000, 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        spec = ctypes.POINTER(_Itimerspec)
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, spec, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


async def sleep_until(deadline: float) -> None:
    """Sleep until `deadline` on trio's clock."""
    if _LIBC is None or isinstance(trio.lowlevel.current_clock(), MockClock):
        await trio.sleep_until(deadline)
        return
    # Its deadline on CLOCK_MONOTONIC (what `time.monotonic_ns` reads), from what is left.
    due = time.monotonic_ns() + max(0, round((deadline - trio.current_time()) * 1e9))
    fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:  # (out of file descriptors, say: the millisecond will do)
        await trio.sleep_until(deadline)
        return
    try:
        when = _Itimerspec(_Timespec(0, 0), _Timespec(due // 10**9, due % 10**9))
        if _LIBC.timerfd_settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(when), None) != 0:
            await trio.sleep_until(deadline)
            return
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
