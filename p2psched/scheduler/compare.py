"""A job's compare command (`verify: {compare: command, command: [...]}`) run on two results:
the trio shell of the run's `Compare` action, on the scheduler's own machine.

Promises: the program gets the two results as JSON files, their paths appended to its
arguments (bytes as {"base64": ...}); it runs without a shell, stdin or stdout, and is killed
after `timeout_s`; exit 0 says they agree and 1 that they do not; anything else (it could not
start, it took too long, another exit status) is an error naming the program and the cause,
never a verdict. The files are deleted afterwards. A node runs COMPARES_AT_ONCE at once (its
dispatcher's limit): a job of many tasks asks for one per task as their results come.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import trio

from p2psched.scheduler.as_json import to_json

COMPARE_TIMEOUT_S = 60.0
COMPARES_AT_ONCE = 4  # run by a node at once: the others wait their turn
STDERR_TAIL = 500  # bytes of its error output quoted in the error


async def compare_results(
    command: tuple[str, ...], a: Any, b: Any, *, timeout_s: float = COMPARE_TIMEOUT_S
) -> tuple[bool | None, str]:
    """(whether `a` and `b` agree by `command`, "") or (None, why it could not tell)."""
    program = command[0]
    try:
        return await _compare(command, a, b, timeout_s)
    except OSError as e:  # (its folder or files: a full disk, say; not the program's fault)
        return None, f"could not write the results for {program!r} to compare: {e.strerror or e}"


async def _compare(
    command: tuple[str, ...], a: Any, b: Any, timeout_s: float
) -> tuple[bool | None, str]:
    program = command[0]
    with tempfile.TemporaryDirectory(prefix="p2psched-compare-") as folder:
        paths = [Path(folder) / "a.json", Path(folder) / "b.json"]
        for path, value in zip(paths, (a, b), strict=True):
            await trio.Path(path).write_text(json.dumps(to_json(value)))
        err = Path(folder) / "stderr"
        with open(err, "wb") as stderr:
            done = None
            with trio.move_on_after(timeout_s):
                try:
                    done = await trio.run_process(
                        [*command, *map(str, paths)],
                        check=False,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                    )
                except OSError as e:
                    return None, f"{program!r} could not start: {e.strerror or e}"
        if done is None:
            return None, f"{program!r} did not answer within {timeout_s:g} s"
        if done.returncode in (0, 1):
            return done.returncode == 0, ""
        with open(err, "rb") as f:
            f.seek(max(0, err.stat().st_size - STDERR_TAIL))
            tail = f.read().decode(errors="replace").strip()
    status = f"exited with {done.returncode}" if done.returncode > 0 else "was killed"
    return None, f"{program!r} {status} (0: agree, 1: differ)" + (f": {tail}" if tail else "")
