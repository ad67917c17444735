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
from p2psched.cli.args import hint
from p2psched.cli.submit import ResultsFolder, _finish, _Following


def run_results(
    client: ControlClient, data_dir: Path, job_id: str, out: Path, as_json: bool, wait: bool
) -> int:
    """Write what the node has of `job_id` under `out` (with `wait`, once the job has ended, or
    what had settled when Ctrl-C stopped the wait); the exit status `submit` would give (0 only
    if every task completed)."""
    path = f"/v1/jobs/{quote(job_id, safe='')}"
    status: dict[str, Any] = client.get(path)
    folder = ResultsFolder(out, status["name"], job=status["job"])
    failures: list[dict[str, Any]] = []
    follow = _Following(client, job_id, folder, failures)
    try:
        status = follow.until_done(None) if wait else follow.caught_up()
    except KeyboardInterrupt:  # stops the wait, not the job (`cancel` does that)
        status = follow.caught_up()
    code = _finish(status, folder, failures, as_json)
    if status["state"] == "running" and not as_json:
        print(
            f"job {job_id} is still running: {follow.after} of {status['total']} task(s) "
            f"settled so far; fetch the rest later with "
            f"`{hint(f'results {job_id} --wait', data_dir)}`"
        )
    return code
