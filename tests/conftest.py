"""The fixtures tests across tests/ share, registered here; what they do lives in tests.harness."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Identities at test difficulty, here and in every node process a test starts (they inherit it).
os.environ.setdefault("P2PSCHED_ID_BITS", "4")

from p2psched import devnet  # noqa: E402
from tests.harness.browser import chromium  # noqa: E402
from tests.harness.devnet import running_devnet  # noqa: E402
from tests.harness.processes import running_node  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture
def net(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[devnet.Devnet]:
    """A devnet (a gate and `param` workers, 5 by default) for one test, stopped after it."""
    with running_devnet(tmp_path / "net", getattr(request, "param", 5)) as started:
        yield started


@pytest.fixture
def node(net: devnet.Devnet, tmp_path: Path) -> Iterator[Path]:
    """A plain node joined to the devnet, running its control API; yields its data dir."""
    with running_node(net.gate, tmp_path / "node") as data:
        yield data


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium for the tests of one module."""
    with chromium() as launched:
        yield launched
