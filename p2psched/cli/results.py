"""`p2psched results JOB`: a job's results and receipts fetched from the node running on the data
dir, written as `submit` writes them (`<out>/<name>/`, the same files and `summary.json`).

Promises: every result the node has settled is written once, whole; a job still running gets
what has settled so far, and is said to be running; fetching a job again rewrites its own
folder, never another job's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from p2psched.api.client import ControlClient
from p2psched.cli.submit import ResultsFolder, _collect, _fetched, _finish


def run_results(
    client: ControlClient, data_dir: Path, job_id: str, out: Path, as_json: bool
) -> int:
    """Write what the node has of `job_id` under `out`; the exit status `submit` would give
    (0 only if every task completed)."""
    path = f"/v1/jobs/{quote(job_id, safe='')}"
    status: dict[str, Any] = client.get(path)
    folder = ResultsFolder(out, status["name"], job=status["job"])
    failures: list[dict[str, Any]] = []
    fetch = _fetched(client, job_id)
    after = 0
    for _ in range(status["total"] + 1):  # each page but the last brings one result or more
        page = client.get(f"{path}/results", after=after)
        if not page["results"]:
            break
        after = page["next"]
        _collect(folder, failures, page["results"], fetch)
    code = _finish(status, folder, failures, as_json)
    if status["state"] == "running" and not as_json:
        print(
            f"job {job_id} is still running: {after} of {status['total']} task(s) settled so "
            f"far; fetch the rest later with `p2psched results {job_id} --data-dir {data_dir}`"
        )
    return code
