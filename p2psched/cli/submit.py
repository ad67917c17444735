"""`p2psched submit`: hand a job to the node running on this data dir, or run an embedded
scheduler node for as long as the job runs; show progress; write results and receipts.

Owns: the submit command's flow, its progress display and summary, and the results folder
(`<results>/<job>/<index>.json` and `<index>.receipt.json`, plus `summary.json`; a job whose
name ran before gets `<job>-2/`, `<job>-3/`, ...: nothing an earlier run wrote is replaced).
Promises: a spec is validated before anything is sent; each result is written once, whole (an
output the node keeps in a file, being too large to show in a page, is fetched on its own);
the exit status is 0 only if every task completed. Ctrl-C cancels the job (its workers are
told to stop, as by `p2psched cancel`), writes what came back and a summary that says so, and
exits with INTERRUPTED; `--detach` is how a job is left running.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from p2psched.api.client import ControlClient
from p2psched.cli.args import hint
from p2psched.cli.show import verification_line
from p2psched.home import private_dir, write_private
from p2psched.scheduler.job import parse_job, read_job

if TYPE_CHECKING:
    from p2psched.scheduler.job import JobSpec

POLL_S = 0.25
DETACH_WAIT_S = 10.0
RESULTS_PAGE = 1000  # the control API's default page of results
FOLDERS_PER_NAME = 1000  # <name>/ .. <name>-1000/: bounds the search for a free one
INTERRUPTED = 130  # the shell's status for Ctrl-C: the job did not finish


class SubmitError(Exception):
    """Something the user can fix; the message says what."""


class ResultsFolder:
    """`<root>/<job name>/`, or if another job wrote there, the first free `<name>-2/`,
    `<name>-3/`, ...: a rerun of a job never overwrites what an earlier run wrote. A folder
    whose summary names `job` is that job's own, and is written again (`p2psched results`
    fetching a job twice)."""

    def __init__(self, root: Path, name: str, job: str | None = None) -> None:
        stem = _safe(name)
        for n in range(1, FOLDERS_PER_NAME + 1):
            path = root / (stem if n == 1 else f"{stem}-{n}")
            if not path.exists() or not any(path.iterdir()) or _written_for(path, job):
                break
        else:
            raise SubmitError(
                f"{root} already holds {FOLDERS_PER_NAME} folders of jobs named {name!r}: "
                "move some away, or pass another --results folder"
            )
        self.path = private_dir(path)
        self.written = 0

    def write(self, result: dict[str, Any]) -> None:
        stem = f"{result['index']:06d}"
        receipt = result.pop("receipt", None)
        write_private(self.path / f"{stem}.json", _document(result))
        if receipt is not None:
            write_private(self.path / f"{stem}.receipt.json", _document(receipt))
        self.written += 1


def _written_for(folder: Path, job: str | None) -> bool:
    """Whether `folder` holds the results of `job` (its summary says so)."""
    if job is None:
        return False
    try:
        return bool(json.loads((folder / "summary.json").read_text()).get("job") == job)
    except (OSError, ValueError, AttributeError):
        return False


def _document(value: Any) -> bytes:
    return (json.dumps(value, indent=1) + "\n").encode()


def _iso(value: Any) -> str:
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no JSON form")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "job"


class Display:
    """A live progress bar on a terminal; nothing on a pipe (the summary says it all)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.console = Console(stderr=True)
        self.live = not quiet and self.console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} done"),
            TextColumn("{task.fields[running]} on workers"),  # sent or running
            TextColumn("{task.fields[failed]} failed"),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
            disable=not self.live,
        )
        self.bar = self.progress.add_task("job", total=total, running=0, failed=0, eta="?")

    @contextmanager
    def shown(self) -> Iterator[Display]:
        with self.progress:
            yield self

    def update(self, status: dict[str, Any]) -> None:
        eta = status.get("eta_s")
        self.progress.update(
            self.bar,
            description=status["job"],
            completed=status["completed"],
            running=status["running"],
            failed=status["failed"],
            eta="?" if eta is None else f"{eta:.0f}s",
        )


def summary_table(status: dict[str, Any], folder: Path) -> Table:
    table = Table(title=f"job {status['job']}")
    table.add_column("tasks")
    table.add_column("completed")
    table.add_column("failed")
    table.add_column("workers")
    table.add_column("spent")
    table.add_column("time")
    table.add_row(
        str(status["total"]),
        str(status["completed"]),
        str(status["failed"]),
        str(status["workers"]),
        f"{status['spent']:g}",
        f"{status['elapsed_s']:.2f}s",
    )
    table.caption = f"results in {folder}"
    return table


def run_submit(
    job_path: Path,
    data_dir: Path,
    *,
    gate: tuple[str, int] | None,
    results: Path,
    as_json: bool,
    detach: bool,
    keep_state: bool = True,
) -> int:
    """Submit the job at `job_path`; the exit status. A node run here for the job keeps its
    state (identity, store) in `data_dir` if `keep_state`, else in a temporary directory,
    removed when the job ends."""
    doc = read_job(job_path)  # once: a large file takes seconds to read
    spec = parse_job(doc, source=str(job_path))
    client = ControlClient.find(data_dir)
    if detach and client is None:
        raise SubmitError(
            f"--detach needs a node running on {data_dir} (start one with `p2psched node "
            "--gate HOST:PORT` or `p2psched worker join`), and none answers there"
        )
    if client is not None:
        # As JSON for the API; YAML's own types (a deadline's timestamp) become ISO text.
        doc = json.loads(json.dumps(doc, default=_iso))
        with client:
            return _remote(client, doc, spec, str(job_path), results, as_json, detach, data_dir)
    if gate is None:
        raise SubmitError(
            f"no node runs on {data_dir}: pass --gate HOST:PORT to run the job from here"
        )
    if keep_state:
        return _embedded(spec, data_dir, gate, results, as_json)
    with tempfile.TemporaryDirectory(prefix="p2psched-submit-") as state:
        code = _embedded(spec, Path(state), gate, results, as_json)
    print(
        f"(the node run for this job kept its state in {state}, now removed; pass --data-dir "
        "DIR to keep it: its identity, ledger and the job's record)",
        file=sys.stderr,
    )
    return code


def _finish(
    status: dict[str, Any],
    folder: ResultsFolder,
    failures: list[dict[str, Any]],
    as_json: bool,
    *,
    interrupted: bool = False,
) -> int:
    status = {**status, "results": str(folder.path), "failures": failures[:20]}
    if interrupted:
        status["interrupted"] = True
    write_private(folder.path / "summary.json", _document(status))
    if as_json:
        print(json.dumps(status))
    else:
        console = Console()
        if interrupted:
            print(
                f"interrupted: job {status['job']} cancelled (its workers were told to stop); "
                f"{status['completed']} of {status['total']} task(s) had completed: what came "
                f"back is in {folder.path}"
            )
        console.print(summary_table(status, folder.path))
        if status.get("verification") is not None:  # one line, for a script to grep
            print(verification_line(status["verification"]), flush=True)
        for f in failures[:10]:
            console.print(f"  {f['task']} ({f['name']}): {f['state']}: {f['error']}", markup=False)
        if len(failures) > 10:
            console.print(f"  … and {len(failures) - 10} more in {folder.path}/summary.json")
    if interrupted:
        return INTERRUPTED
    return 0 if status["completed"] == status["total"] else 1


def _say_unmatched(unmatched: list[dict[str, Any]], said: set[str]) -> None:
    """Say once per need, as soon as the node knows, that no worker found meets it, and
    the nearest misses: the tasks wait for one to appear, then fail."""
    for u in unmatched:
        if u["need"] not in said:
            said.add(u["need"])
            waiting = "1 task waits" if u["tasks"] == 1 else f"{u['tasks']} tasks wait"
            print(
                f"no worker found meets {u['need']} ({waiting} for one): {u['why']}",
                file=sys.stderr,
                flush=True,
            )


def _collect(
    folder: ResultsFolder,
    failures: list[dict[str, Any]],
    results: list[dict[str, Any]],
    fetch: Callable[[str], Any] | None = None,
) -> None:
    """Write `results`; `fetch(task_id)` gives an output a result only names."""
    for r in results:
        if r["state"] != "completed":
            failures.append({k: r[k] for k in ("task", "name", "state", "error")})
        if r.pop("output_spooled", False):
            assert fetch is not None  # (results asked for whole have theirs)
            r["output"] = fetch(r["task"])
        folder.write(r)


def _fetched(client: ControlClient, job_id: str) -> Callable[[str], Any]:
    """A task's output read from the node's API, as JSON."""
    from p2psched.node.status import to_json
    from p2psched.wire.codec import decode
    from p2psched.wire.noise import MAX_FRAME

    def fetch(task_id: str) -> Any:
        index = task_id.rpartition("/")[2]
        packed = client.get_bytes(f"/v1/jobs/{quote(job_id, safe='')}/tasks/{index}/output")
        return to_json(decode(packed, MAX_FRAME))

    return fetch


def _remote(
    client: ControlClient,
    doc: Any,
    spec: JobSpec,
    source: str,
    results: Path,
    as_json: bool,
    detach: bool,
    data_dir: Path,
) -> int:
    answer = client.post("/v1/jobs", {"spec": doc, "source": source})
    job_id = answer["job"]
    if detach:
        # Committed means a worker took them. Tasks beyond what the workers can hold now stay
        # queued on the node, which commits them as room appears; so wait for the first
        # commitments (or a few seconds), not for all.
        deadline = time.monotonic() + DETACH_WAIT_S
        while True:
            status = client.get(f"/v1/jobs/{quote(job_id, safe='')}")
            counts = status["counts"]
            queued = counts.get("queued", 0) + counts.get("negotiating", 0)
            placed = status["total"] - queued
            settled = (placed and not counts.get("negotiating")) or status["state"] != "running"
            if settled or status.get("unmatched") or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        unmatched = status.get("unmatched", [])
        if as_json:
            print(
                json.dumps(
                    {
                        "job": job_id,
                        "tasks": answer["tasks"],
                        "queued": queued,
                        "unmatched": unmatched,
                    }
                )
            )
        else:
            waiting = (
                "until a worker that meets their need appears"
                if unmatched
                else ("until workers have room")
            )
            print(
                f"job {job_id}: {placed} of {answer['tasks']} tasks committed"
                + (f", {queued} queued on the node {waiting}" if queued else "")
                + f"; follow it with `{hint(f'status {job_id}', data_dir)}`"
            )
            _say_unmatched(unmatched, set())
        return 0
    folder = ResultsFolder(results, spec.name)
    failures: list[dict[str, Any]] = []
    display = Display(answer["tasks"], as_json)
    follow = _Following(client, job_id, folder, failures)
    try:
        with display.shown():
            status = follow.until_done(display)
    except KeyboardInterrupt:
        # Ctrl-C: cancel the job on the node, then take in what settled (the cancel ends
        # every task at once, so the job is done by the next look).
        client.post(f"/v1/jobs/{quote(job_id, safe='')}/cancel", {"tasks": None})
        status = follow.until_done(None)
        return _finish(status, folder, failures, as_json, interrupted=True)
    return _finish(status, folder, failures, as_json)


class _Following:
    """A job on a node, followed through its API: its results written as they settle."""

    def __init__(
        self,
        client: ControlClient,
        job_id: str,
        folder: ResultsFolder,
        failures: list[dict[str, Any]],
    ) -> None:
        self.client, self.folder, self.failures = client, folder, failures
        self.path = f"/v1/jobs/{quote(job_id, safe='')}"
        self.fetch = _fetched(client, job_id)
        self.after = 0
        self.said: set[str] = set()  # needs already said to have no worker

    def caught_up(self) -> dict[str, Any]:
        """Write every result settled so far; the job's status from before the pages (so that
        a job it says has ended has all its results written)."""
        status: dict[str, Any] = self.client.get(self.path)
        for _ in range(status["total"] + 1):  # each page but the last brings one result or more
            page = self.client.get(f"{self.path}/results", after=self.after)
            self.after = page["next"]
            _collect(self.folder, self.failures, page["results"], self.fetch)
            if len(page["results"]) < RESULTS_PAGE:
                break
        return status

    def until_done(self, display: Display | None) -> dict[str, Any]:
        """Write results until the job is done and all its results are in; its last status."""
        while True:
            status = self.caught_up()
            if display is not None:
                display.update(status)
                _say_unmatched(status.get("unmatched", []), self.said)
            if status["state"] != "running" and self.after >= status["total"]:
                return status
            time.sleep(POLL_S)  # caught up: wait for more to settle


def _embedded(
    spec: JobSpec, data_dir: Path, gate: tuple[str, int], results: Path, as_json: bool
) -> int:
    """Run the job from a node started here for as long as the job runs."""
    import signal

    import trio

    from p2psched.identity import load_or_create_identity
    from p2psched.node.node import bind_host_toward, open_node

    identity = load_or_create_identity(data_dir)
    failures: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}
    folders: list[ResultsFolder] = []
    interrupted: list[bool] = []
    said: set[str] = set()

    async def main() -> None:
        async with open_node(
            identity, data_dir, host=bind_host_toward(gate[0]), seeds=[gate], dht_client=True
        ) as node:
            job = node.jobs.submit(spec)
            folder = ResultsFolder(results, spec.name)  # only once the job is taken
            folders.append(folder)
            display = Display(job.run.total, as_json)

            async def cancel_on_ctrl_c() -> None:
                async for _ in ctrl_c:
                    interrupted.append(True)
                    node.jobs.cancel(job.job_id)  # ends every task now: the loop ends too
                    return

            with trio.open_signal_receiver(signal.SIGINT) as ctrl_c, display.shown():
                async with trio.open_nursery() as watching:
                    watching.start_soon(cancel_on_ctrl_c)
                    written = 0
                    while True:
                        with trio.move_on_after(POLL_S):
                            await job.done.wait()
                        new = job.settled[written:]
                        written += len(new)
                        _collect(folder, failures, [job.result_view(t, whole=True) for t in new])
                        outcome.update(job.status(node.dht.now()))
                        display.update(outcome)
                        _say_unmatched(outcome["unmatched"], said)
                        if job.done.is_set() and written == len(job.settled):
                            break
                    watching.cancel_scope.cancel()
            await node.jobs.dispatcher.links_flushed()  # the cancels reach the workers

    trio.run(main)
    return _finish(outcome, folders[0], failures, as_json, interrupted=bool(interrupted))
