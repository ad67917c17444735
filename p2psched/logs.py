"""The process's logs: one event per line on stderr, as short text for people or as JSON lines
for a log pipeline, carrying the node, job and task an event concerns.

Owns: the handler on the root logger (one, replaced when configured again), the formats, and
the context variables: `current_node`, which a node sets for the trio tasks it starts, and
`current_task`, which a worker sets for the trio task that runs one of its tasks.
Promises: a text event is one line (what is not printable in it, a peer's words included, is
escaped); a JSON line always parses and has `ts` (ISO 8601, UTC), `level`, `logger` and `event`;
`node`, `job` and `task` when they apply (from `extra={...}`, else the node from the context);
`error` when an exception is attached (`traceback` with it). Other `extra` fields come along.
Libraries' own logs stay at warning and above, whatever the level chosen for p2psched's.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
# The id (hex) of the node whose work is being done: set by `open_node`, inherited by every
# trio task started from there. A process running several nodes (tests) sets it per node.
current_node: ContextVar[str | None] = ContextVar("p2psched_node", default=None)
# (job id, task id) of the task a worker's trio task runs: its driver's events carry them.
current_task: ContextVar[tuple[str, str] | None] = ContextVar("p2psched_task", default=None)

# What every LogRecord has: anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_FIRST = ("node", "job", "task")  # the fields every event may carry, shown first


def configure(level: str = "warning", as_json: bool = False) -> None:
    """Send p2psched's events at `level` and above (libraries': warning and above) to stderr,
    in text or JSON lines. Calling it again replaces what an earlier call set."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: choose one of {', '.join(LEVELS)}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("p2psched").setLevel(level.upper())


@contextmanager
def naming_node(node_id: bytes) -> Iterator[None]:
    """Within the block, and in every task started from it, events carry this node's id."""
    token = current_node.set(node_id.hex())
    try:
        yield
    finally:
        current_node.reset(token)


@contextmanager
def naming_task(job: str, task: str) -> Iterator[None]:
    """Within the block, events carry this job and task (unless `extra` names others)."""
    token = current_task.set((job, task))
    try:
        yield
    finally:
        current_task.reset(token)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event's context: node, job, task (those that apply), then any other `extra`."""
    out: dict[str, Any] = {}
    node = getattr(record, "node", None) or current_node.get()
    if node is not None:
        out["node"] = node
    running = current_task.get()
    for i, name in enumerate(("job", "task")):
        value = getattr(record, name, None)
        if value is None and running is not None:
            value = running[i]
        if value is not None:
            out[name] = value
    for name, value in vars(record).items():
        if name not in _STANDARD and name not in _FIRST and not name.startswith("_"):
            out[name] = value
    return out


def _iso(created: float) -> str:
    """2026-01-31T12:00:01.123Z"""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **fields(record),
        }
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            event["error"] = f"{type(e).__name__}: {e}"
            event["traceback"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`12:00:01.123 WARNING scheduler.service: message  job=... task=... node=1a2b3c4d`: the
    node's id shortened, other `extra` fields left to the JSON format (the message names what
    a person needs), a traceback, if any, on the lines after."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        where = record.name.removeprefix("p2psched.")
        context = {k: v for k, v in fields(record).items() if k in _FIRST}
        if "node" in context:
            context["node"] = str(context.pop("node"))[:8]  # last: the least read
        line = f"{when} {record.levelname:<7} {where}: {one_line(record.getMessage())}"
        for name, value in context.items():
            line += f"  {name}={one_line(str(value))}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def one_line(text: str) -> str:
    """`text` with what is not printable (line breaks, terminal escapes) written as escapes:
    what a peer said (a refusal, a task id) is logged on the event's own line, and never
    starts another nor drives the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (a test's capture replaces it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)
