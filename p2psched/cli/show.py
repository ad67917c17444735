"""How the commands that read a running node reach it and show its answer: the node's control
API client on a data dir, one GET printed as JSON (--json) or handed back to be shown, and
tables drawn with rich.

Promises: --json prints the node's answer as it is, one JSON document; a table on a pipe is
laid out at its full width, so each row stays one line a script can grep.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from p2psched.cli.args import UsageError, data_dir

if TYPE_CHECKING:
    from p2psched.api.client import ControlClient

# Wide enough for any row: a pipe has no width of its own, and rich would wrap at 80 columns.
PIPE_WIDTH = 10_000


def client(args: argparse.Namespace) -> ControlClient:
    """The control API of the node running on --data-dir, or a UsageError saying none runs."""
    from p2psched.api.client import ControlClient

    found = ControlClient.find(data_dir(args))
    if found is None:
        raise UsageError(
            f"no node runs on {data_dir(args)}; start one (p2psched node --gate HOST:PORT, "
            "or worker join) or pass the --data-dir of one that runs"
        )
    return found


def view(args: argparse.Namespace, path: str, **params: Any) -> Any:
    """GET `path` from the running node's API: printed as JSON (and None returned) with
    --json, else returned for the command to show."""
    with client(args) as node:
        got = node.get(path, **params)
    if args.json:
        print(json.dumps(got))
        return None
    return got


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: Collection[str] = ()
) -> None:
    """A table with a header line and no borders; the columns named in `right` are numbers,
    aligned right. Cells are shown as the text they are (what peers sent is never markup)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header, justify="right" if header in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    console = Console()
    if console.is_terminal:
        console.print(table)
        return
    console = Console(width=PIPE_WIDTH)
    with console.capture() as drawn:
        console.print(table)
    # rich pads every cell to its column's width; on a pipe a line ends where its text does
    print("\n".join(line.rstrip() for line in drawn.get().splitlines()))


def verification_line(cost: dict[str, Any]) -> str:
    """What verifying a job's results cost (its status's `verification`), in one line."""
    return (
        f"verification: {cost['copies']} copies run beyond one per task, "
        f"{cost['disputed']} result(s) disputed (not paid), "
        f"{cost['no_quorum']} task(s) with no quorum, {cost['extra_paid']:g} paid for "
        "agreeing copies"
    )
