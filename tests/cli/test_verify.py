"""`p2psched verify JOB` refusing what it cannot check: a data dir no node has run on, and a job
its store never had, each named in one line with exit status 2."""

from __future__ import annotations

from pathlib import Path

from p2psched.store import Store
from tests.harness.processes import p2psched


def test_verify_names_a_missing_store_and_an_unknown_job(tmp_path: Path) -> None:
    done = p2psched("verify", "squares-1a2b3c4d", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert f"no store at {tmp_path / 'state.db'}: no node has run with --data-dir" in (done.stderr)
    Store.open(tmp_path / "state.db").close()
    done = p2psched("verify", "squares-1a2b3c4d", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "no job 'squares-1a2b3c4d' in" in done.stderr and done.stderr.count("\n") == 1
