"""The store the store's tests share: a fresh one in the test's tmp_path, owned by ME."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psched.store import Store
from tests.harness.store import ME


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "node.db", own_public_key=ME.public_key) as s:
        yield s
