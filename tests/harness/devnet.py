"""A devnet (a gate and N workers as processes on loopback) for the length of a test or a
module, stopped after it with no process left behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from p2psched import devnet


@contextmanager
def running_devnet(
    folder: Path, workers: int, drivers: list[str] | None = None
) -> Iterator[devnet.Devnet]:
    """A devnet of a gate and `workers` workers in `folder` (with `drivers` enabled on each, if
    given), stopped on leaving, with none of its processes left."""
    started = devnet.up(folder, workers, drivers=drivers)
    try:
        yield started
    finally:
        devnet.down(folder)
        assert not any(devnet._exists(p) for p in started.pids.values())
