"""Another user of the same machine who made the data directory first (a shared or guessable
path such as one under /tmp, named by --data-dir or $P2PSCHED_HOME): its owner may rename, swap
and read whatever the node would write there, so a node refuses to use it rather than writing
its key, token and results into it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2psched.home import private_dir
from tests.harness.processes import p2psched

NOBODY = 65534


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)  # (so that the other user could reach it)
    data = tmp_path / "shared"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    data.chmod(0o777)
    return data


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's needs root")
def test_a_data_dir_another_user_owns_is_refused(foreign: Path) -> None:
    with pytest.raises(PermissionError, match="uid 65534"):
        private_dir(foreign)
    done = p2psched("init", "--data-dir", str(foreign))
    assert done.returncode != 0 and "uid 65534" in done.stderr
    assert list(foreign.iterdir()) == []
