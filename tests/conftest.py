"""Fixtures shared by the test modules that run p2psched as separate processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psched import devnet


@pytest.fixture
def net(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[devnet.Devnet]:
    """A devnet (a gate and `param` workers, 5 by default) for one test, stopped after it."""
    workers = getattr(request, "param", 5)
    started = devnet.up(tmp_path / "net", workers)
    try:
        yield started
    finally:
        devnet.down(tmp_path / "net")
        assert not any(devnet._exists(p) for p in started.pids.values())
