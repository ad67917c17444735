"""The commands about jobs: `submit` one, and, against the node running on --data-dir, list
them (`jobs`), follow one (`status`, `tasks`, `history`), fetch its `results`, `cancel` one, and
read the `ledger` (from the node's store when no node runs there), and `verify` a job's results
from the store.

Promises: --json prints the node's answer as it is; a job or task named wrongly on the command
line is refused before the node is asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from p2psched.cli.args import UsageError, add_command, data_dir, hint, parse_hostport
from p2psched.cli.show import client, print_table, verification_line, view

if TYPE_CHECKING:
    from p2psched.cli.args import Subcommands


def cmd_submit(args: argparse.Namespace) -> None:
    from p2psched.cli.submit import run_submit

    gate = parse_hostport(args.gate, "--gate") if args.gate else None
    code = run_submit(
        Path(args.job),
        data_dir(args),
        gate=gate,
        results=Path(args.results),
        as_json=args.json,
        detach=args.detach,
        keep_state=args.data_dir is not None,
    )
    sys.exit(code)


def cmd_results(args: argparse.Namespace) -> None:
    from p2psched.cli.results import run_results

    with client(args) as node:
        code = run_results(node, data_dir(args), args.job, Path(args.out), args.json, args.wait)
    sys.exit(code)


def cmd_jobs(args: argparse.Namespace) -> None:
    listed = view(args, "/v1/jobs", limit=args.limit)
    if listed is None:
        return
    print_table(
        ("JOB", "STATE", "DONE", "FAILED", "SPENT"),
        (
            (
                j["job"],
                j["state"] + (" (resumed)" if j.get("resumed_at") is not None else ""),
                f"{j['completed']}/{j['total']}",
                j["failed"],
                f"{j['spent']:g}",
            )
            for j in listed["jobs"]
        ),
        right={"DONE", "FAILED", "SPENT"},
    )
    if len(listed["jobs"]) >= args.limit:
        print(f"(the newest {args.limit}: --limit N for more)")


def cmd_status(args: argparse.Namespace) -> None:
    status = view(args, f"/v1/jobs/{quote(args.job, safe='')}")
    if status is None:
        return
    print(f"job {status['job']}: {status['state']}, {status['completed']}/{status['total']} done")
    print_table(("STATE", "TASKS"), sorted(status["counts"].items()), right={"TASKS"})
    print(
        f"spent {status['spent']:g}, committed {status['committed']:g}, "
        f"{status['workers']} worker(s), {status['elapsed_s']:.1f}s"
    )
    if status.get("verification") is not None:
        print(verification_line(status["verification"]))
    for u in status.get("unmatched", []):
        print(f"no worker found meets {u['need']} ({u['tasks']} tasks wait): {u['why']}")


def cmd_tasks(args: argparse.Namespace) -> None:
    params = {"state": args.state} if args.state else {}
    listed = view(args, f"/v1/jobs/{quote(args.job, safe='')}/tasks", **params)
    if listed is None:
        return
    print_table(
        ("TASK", "STATE", "WORKER", "ERROR"),
        (
            (t["task"], t["state"], (t["worker"] or "-")[:16], t["error"] or "")
            for t in listed["tasks"]
        ),
    )


def cmd_history(args: argparse.Namespace) -> None:
    job, _, index = args.task.rpartition("/")
    if not job or not index.isdigit():
        raise UsageError(
            f"{args.task!r}: give a task as JOB/N (see {hint('tasks JOB', data_dir(args))})"
        )
    history = view(args, f"/v1/jobs/{quote(job, safe='')}/tasks/{index}/history")
    if history is None:
        return
    print(f"{history['task']}: {history['state']}")
    print_table(
        ("AT", "FROM", "TO", "WHY"),
        ((_clock(m["at"]), m["from"], m["to"], m["reason"] or "") for m in history["transitions"]),
    )


def _clock(at: float) -> str:
    """A moment as the local time of day, to the millisecond."""
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


def cmd_cancel(args: argparse.Namespace) -> None:
    job, slash, task = args.target.partition("/")
    if not job or (slash and not task):
        raise UsageError(f"{args.target!r}: give a job (JOB) or one of its tasks (JOB/N)")
    tasks = [args.target] if task else None
    with client(args) as node:
        path = f"/v1/jobs/{quote(job, safe='')}/cancel"
        cancelled = node.post(path, {"tasks": tasks})["cancelled"]
    print(f"cancelled {len(cancelled)} task(s)")


def cmd_ledger(args: argparse.Namespace) -> None:
    ledger = _ledger(args)
    if args.json:
        print(json.dumps(ledger))
    else:
        print_table(
            ("JOB", "COMMITTED", "SPENT", "TASKS PAID", "PENDING", "DISPUTED"),
            (
                (
                    j["job"],
                    f"{j['committed']:g}",
                    f"{j['spent']:g}",
                    j["tasks_paid"],
                    j["pending"],
                    j["disputed"],
                )
                for j in ledger["jobs"]
            ),
            right={"COMMITTED", "SPENT", "TASKS PAID", "PENDING", "DISPUTED"},
        )
        print_table(
            ("PEER", "SPENT", "EARNED", "DISPUTED"),
            (
                (p["peer"][:32], f"{p['spent']:g}", f"{p['earned']:g}", p["disputed"])
                for p in ledger["peers"]
            ),
            right={"SPENT", "EARNED", "DISPUTED"},
        )
        print(f"total spent {ledger['spent']:g}, earned {ledger['earned']:g}")
        if ledger["disputed"]:
            print("receipts not paid (their results disputed, or no quorum settled them):")
            print_table(
                ("JOB", "TASK", "PEER", "ASKED", "VERDICT"),
                (
                    (d["job"], d["task"], d["peer"][:32], f"{d['amount']:g}", d["verdict"])
                    for d in ledger["disputed"]
                ),
                right={"ASKED"},
            )
    if args.verify:
        problems = ledger["problems"]
        for line in problems:
            print(f"problem: {line}", file=sys.stderr)
        print(f"verified every entry from its signature: {len(problems)} problem(s)")
        if problems:
            sys.exit(1)


def _ledger(args: argparse.Namespace) -> dict[str, Any]:
    """The ledger from the node running on --data-dir, else read from its store (SQLite lets
    a reader in beside a writer): the --config file's [database] path, else the data dir's."""
    from p2psched.api.client import ControlClient

    found = ControlClient.find(data_dir(args))
    if found is not None:
        with found:
            got: dict[str, Any] = found.get("/v1/ledger", verify=str(args.verify).lower())
            return got
    from p2psched.node.status import ledger_view
    from p2psched.store import Store

    with Store.open(_store_path(args, "ledger")) as store:
        return ledger_view(store, args.verify)


def _store_path(args: argparse.Namespace, what: str) -> Path:
    """The node's store (its `what` is read from there): the --config file's [database] path,
    else the data dir's; a UsageError if no node has made it yet."""
    from p2psched.node.config import database_of
    from p2psched.node.node import STORE_FILE

    path = (database_of(Path(args.config)) if args.config else None) or data_dir(args) / STORE_FILE
    if not path.exists():
        if args.config:
            raise UsageError(f"no {what} at {path} ([database] path of {args.config}) yet")
        raise UsageError(f"no {what} at {path}: no node has run with --data-dir {path.parent}")
    return path


def cmd_verify(args: argparse.Namespace) -> None:
    from p2psched.cli.audit import run_verify

    sys.exit(run_verify(_store_path(args, "store"), args.job, args.json))


# A job's id as examples give it: a real one is its name and 8 hex digits of its own.
JOB = "hello-1a2b3c4d"
WHERE_JOB = f"{JOB} stands for a job's id, as `p2psched jobs --data-dir .devnet/gate` lists it"
AS_JSON = "print the node's answer as JSON"


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    sp = add_command(
        sub,
        "submit",
        "run a job (a YAML file) on the network and write its results",
        [
            "p2psched submit examples/hello.yaml --data-dir .devnet/gate",
            "p2psched submit examples/sleep.yaml --data-dir .devnet/gate --detach",
        ],
        parents=[common],
        more="The node running on --data-dir runs it; with none there, --gate runs one here "
        "for as long as the job runs. Ctrl-C cancels the job. (README: Running jobs)",
    )
    sp.add_argument("job", help="the job spec, a YAML file (see examples/)")
    sp.add_argument(
        "--gate",
        metavar="HOST:PORT",
        help="with no node running on --data-dir: run one here through this gate for as long as "
        "the job runs (its state in a temporary directory, removed after, unless --data-dir)",
    )
    sp.add_argument("--results", default="results", help="folder for results")
    sp.add_argument("--json", action="store_true", help="print one JSON summary, no progress")
    sp.add_argument(
        "--detach", action="store_true", help="return once the tasks are committed (needs a node)"
    )
    sp.set_defaults(func=cmd_submit, runs_a_job=True)

    sp = add_command(
        sub,
        "results",
        "fetch a job's results and receipts from the running node, as submit writes them",
        [
            f"p2psched results {JOB} --data-dir .devnet/gate",
            f"p2psched results {JOB} --data-dir .devnet/gate --wait --out ./mine",
        ],
        parents=[common],
        more="They go to OUT/NAME/ (OUT/NAME-2/ if another job of that name wrote there): for "
        "a job submitted with --detach.",
        where=WHERE_JOB,
    )
    sp.add_argument("job", help="the job's id (see p2psched jobs)")
    sp.add_argument("--out", default="results", help="folder for results")
    sp.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job to end, writing results as they settle (Ctrl-C stops the "
        "wait, not the job)",
    )
    sp.add_argument("--json", action="store_true", help="print one JSON summary")
    sp.set_defaults(func=cmd_results)
    _register_following(sub, common)


def _register_following(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """The commands that follow a job on the running node, and its ledger."""
    sp = add_command(
        sub,
        "jobs",
        "list the jobs of the node running on --data-dir",
        [
            "p2psched jobs --data-dir .devnet/gate",
            "p2psched jobs --limit 500 --data-dir .devnet/gate",
        ],
        parents=[common],
        more="Its running jobs, and the newest others (those it ran before it restarted too), "
        "newest first.",
    )
    sp.add_argument(
        "--limit",
        type=int,
        default=100,
        help="list at most this many, up to 1000 (default: %(default)s; running ones are "
        "always listed)",
    )
    sp.add_argument("--json", action="store_true", help=AS_JSON)
    sp.set_defaults(func=cmd_jobs)
    sp = add_command(
        sub,
        "status",
        "one job's progress",
        [f"p2psched status {JOB} --data-dir .devnet/gate"],
        parents=[common],
        where=WHERE_JOB,
    )
    sp.add_argument("job", help="the job's id (see p2psched jobs)")
    sp.add_argument("--json", action="store_true", help=AS_JSON)
    sp.set_defaults(func=cmd_status)
    sp = add_command(
        sub,
        "tasks",
        "one job's tasks: each one's state, worker and error",
        [f"p2psched tasks {JOB} --state failed --data-dir .devnet/gate"],
        parents=[common],
        where=WHERE_JOB,
    )
    sp.add_argument("job", help="the job's id (see p2psched jobs)")
    sp.add_argument("--state", help="only tasks in this state (e.g. failed)")
    sp.add_argument("--json", action="store_true", help=AS_JSON)
    sp.set_defaults(func=cmd_tasks)
    sp = add_command(
        sub,
        "history",
        "a task's transitions, each with why",
        [f"p2psched history {JOB}/0 --data-dir .devnet/gate"],
        parents=[common],
        where=WHERE_JOB + "; its tasks are numbered from 0",
    )
    sp.add_argument("task", metavar="JOB/N", help="the task: its job's id and its number")
    sp.add_argument("--json", action="store_true", help=AS_JSON)
    sp.set_defaults(func=cmd_history)
    sp = add_command(
        sub,
        "cancel",
        "cancel a job (JOB) or one of its tasks (JOB/N)",
        [f"p2psched cancel {JOB} --data-dir .devnet/gate"],
        parents=[common],
        where=WHERE_JOB,
    )
    sp.add_argument("target", metavar="JOB|TASK", help="a job's id, or JOB/N for one task")
    sp.set_defaults(func=cmd_cancel)
    _register_ledger(sub, common)


def _register_ledger(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    sp = add_command(
        sub,
        "ledger",
        "money spent and earned, per job and per peer",
        ["p2psched ledger --verify --data-dir .devnet/gate"],
        parents=[common],
        more="From the node running on --data-dir, else from its store. (README: Scheduling: "
        "strategies, predictor, durable state, ledger)",
    )
    sp.add_argument("--verify", action="store_true", help="re-check every entry's signature")
    sp.add_argument("--json", action="store_true", help="print the ledger as JSON")
    _store_option(sp)
    sp.set_defaults(func=cmd_ledger)
    sp = add_command(
        sub,
        "verify",
        "re-check a job's results offline: each kept result against its receipt and its copies",
        [f"p2psched verify {JOB} --data-dir .devnet/gate"],
        parents=[common],
        more="Read from the store of the node on --data-dir (running or not): each receipt's "
        "signature, the scheduler, job and task it names and the hash of the output stored; for "
        "a job whose job.yaml has verify:, the copies' results compared again by its rule. "
        "Exits 1 naming each problem found. (README: Verified results)",
        where=WHERE_JOB,
    )
    sp.add_argument("job", help="the job's id (see p2psched jobs)")
    sp.add_argument("--json", action="store_true", help="print what was checked as JSON")
    _store_option(sp)
    sp.set_defaults(func=cmd_verify)


def _store_option(sp: argparse.ArgumentParser) -> None:
    """--config, for a command that reads the node's store (`_store_path`)."""
    sp.add_argument(
        "--config",
        metavar="FILE",
        help="the node's config, whose [database] path is its store (README: A node's config file)",
    )
