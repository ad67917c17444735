"""The design document 003's admin commands (`create-task`, `list-tasks`, `get-task`,
`cancel-task`, `list-workers`), each one call of the running node's REST API
(`/api/v1/...`, p2psched/api/rest_api.py).

Promises: --json prints the node's answer as it is; a refusal (an unknown task id, say) is one
line on stderr naming what was wrong, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from p2psched.cli.args import UsageError, add_command
from p2psched.cli.show import client, print_table, view

if TYPE_CHECKING:
    from p2psched.cli.args import Subcommands

TASK = "task-3f2b6c1e-8d4a-4b7e-9c21-5a6f0e9d7b13"
WHERE_TASK = f"{TASK} stands for a task's id, as `p2psched list-tasks` lists it"
AS_JSON = "print the node's answer as JSON"
GATE = "--data-dir .devnet/gate"
EXAMPLE_INPUT = """'{"prompt": "hi"}'"""


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    sp = add_command(
        sub,
        "create-task",
        "create a task for a model, run by the http driver of a worker that serves it",
        [
            "p2psched create-task --name 'Text Generation' --model llama-3-8b "
            f"""--input '{{"prompt": "Hello, world!"}}' {GATE}"""
        ],
        parents=[common],
        more="The node running on --data-dir submits it (POST /api/v1/tasks) and prints its "
        "id; get-task follows it. "
        "(README: Operating a node: API, dashboard, top, metrics and logs)",
    )
    sp.add_argument("--name", default="", help="its name (default: from the model)")
    sp.add_argument("--model", required=True, help="the model, as a worker's ad lists it")
    sp.add_argument(
        "--input", required=True, metavar="JSON", help="what the model's server gets: an object"
    )
    sp.add_argument("--priority", type=int, default=5, help="0..9, 9 most urgent")
    sp.add_argument("--json", action="store_true", help=AS_JSON)
    sp.set_defaults(func=cmd_create_task)

    sp = add_command(
        sub,
        "list-tasks",
        "list the tasks created on the node running on --data-dir, newest first",
        [f"p2psched list-tasks {GATE}", f"p2psched list-tasks --status completed {GATE}"],
        parents=[common],
    )
    sp.add_argument("--status", help="only those in this state (queued, scheduled, completed, ...)")
    sp.add_argument("--model", help="only those for this model")
    sp.add_argument("--limit", type=int, default=100, help="show at most this many")
    sp.add_argument("--json", action="store_true", help=AS_JSON)
    sp.set_defaults(func=cmd_list_tasks)

    for name, summary, handler in (
        ("get-task", "show a task: its state, worker and result", cmd_get_task),
        ("cancel-task", "cancel a task; the worker running it stops it", cmd_cancel_task),
    ):
        sp = add_command(
            sub,
            name,
            summary,
            [f"p2psched {name} {TASK} {GATE}"],
            parents=[common],
            where=WHERE_TASK,
        )
        sp.add_argument("task", help="the task's id (task-<uuid>)")
        sp.add_argument("--json", action="store_true", help=AS_JSON)
        sp.set_defaults(func=handler)

    sp = add_command(
        sub,
        "list-workers",
        "list the live workers the network's ads show, with their Task Instance ids",
        [f"p2psched list-workers {GATE}"],
        parents=[common],
    )
    sp.add_argument("--json", action="store_true", help=AS_JSON)
    sp.set_defaults(func=cmd_list_workers)


def cmd_create_task(args: argparse.Namespace) -> None:
    try:
        task_input = json.loads(args.input)
    except ValueError as e:
        raise UsageError(
            f"--input is not JSON ({e}): give an object, e.g. {EXAMPLE_INPUT}"
        ) from None
    if not isinstance(task_input, dict):
        raise UsageError(f"--input must be a JSON object, e.g. {EXAMPLE_INPUT}")
    body = {"name": args.name, "model": args.model, "input": task_input, "priority": args.priority}
    with client(args) as node:
        _said(args, node.post("/api/v1/tasks", body))


def cmd_list_tasks(args: argparse.Namespace) -> None:
    page = view(args, "/api/v1/tasks", status=args.status, model=args.model, limit=args.limit)
    if page is None:
        return
    print_table(
        ("TASK", "NAME", "MODEL", "STATUS", "PRIORITY"),
        ((t["id"], t["name"], t["model"], t["status"], t["priority"]) for t in page["tasks"]),
        right={"PRIORITY"},
    )
    if page["total"] > len(page["tasks"]):
        print(f"({len(page['tasks'])} of {page['total']}: --limit N for more)")


def cmd_get_task(args: argparse.Namespace) -> None:
    task = view(args, f"/api/v1/tasks/{quote(args.task, safe='')}")
    if task is not None:
        _show(task)


def cmd_cancel_task(args: argparse.Namespace) -> None:
    with client(args) as node:
        _said(args, node.delete(f"/api/v1/tasks/{quote(args.task, safe='')}"))


def cmd_list_workers(args: argparse.Namespace) -> None:
    listed = view(args, "/api/v1/workers")
    if listed is None:
        return
    print_table(
        ("WORKER", "MODELS", "FREE SLOTS", "TASK INSTANCES"),
        (
            (
                w["id"],
                ",".join(w["models"]),
                w["free_slots"],
                ",".join(i["id"] for i in w["instances"]),
            )
            for w in listed["workers"]
        ),
        right={"FREE SLOTS"},
    )


def _said(args: argparse.Namespace, task: dict[str, Any]) -> None:
    """A task the node answered: as JSON with --json, else its id and status."""
    print(json.dumps(task) if args.json else f"{task['id']} {task['status']}")


def _show(task: dict[str, Any]) -> None:
    for field in ("id", "name", "model", "status", "priority", "worker"):
        print(f"{field}: {task[field]}")
    print(f"result: {json.dumps(task['result'])}")
