"""What a job's fields cannot check one by one: how they combine (tasks or a template with its
matrix), the matrix, and every task the job derives, with its input as its driver will see it.

Promises: a job that passes derives at most MAX_TASKS tasks, each input plain JSON data of at
most MAX_INPUT_BYTES encoded that its driver takes, all of them within MAX_JOB_INPUT_BYTES; the
problems found name the place in the file, and for a templated task which task it was.
"""

from __future__ import annotations

import math
from datetime import date
from typing import TYPE_CHECKING, Any

from p2psched.resources.driver_inputs import MISSING, input_problems
from p2psched.scheduler.job.derive import expanded
from p2psched.scheduler.job.problems import MAX_PROBLEMS, NAME, NOT_GIVEN, Loc, Problem, shown
from p2psched.scheduler.job.templates import KeyClash, placeholders
from p2psched.wire.codec import encode
from p2psched.wire.deal import MAX_INPUT_BYTES

if TYPE_CHECKING:
    from p2psched.scheduler.job.models import JobSpec

MAX_TASKS = 100_000
# All inputs of a job together: the scheduler keeps them in memory and in its store.
MAX_JOB_INPUT_BYTES = 256 << 20
MAX_SLEEP_S = 86_400.0  # a longer sleep in a job is a mistake; a worker would run it
_MAX_DEPTH = 32


def job_problems(spec: JobSpec) -> list[Problem]:
    """What the fields' own checks cannot see: how fields combine, and every derived task."""
    found: list[Problem] = []
    if spec.tasks is not None and (spec.template is not None or spec.matrix is not None):
        found.append(
            Problem(
                ("template" if spec.template is not None else "matrix",),
                "(given)",
                "give either tasks (a list) or template with matrix, not both",
            )
        )
    elif spec.tasks is None and spec.template is None and spec.matrix is None:
        found.append(
            Problem(("tasks",), NOT_GIVEN, "required: give tasks (a list) or template and matrix")
        )
    elif spec.tasks is None and spec.template is None:
        found.append(Problem(("template",), NOT_GIVEN, "required with matrix: the task to fill"))
    elif spec.tasks is None and spec.matrix is None:
        found.append(
            Problem(("matrix",), NOT_GIVEN, "required with template: parameters and their values")
        )
    if not found:
        found = _list_problems(spec) if spec.tasks is not None else _template_problems(spec)
    if not found:
        found = _task_problems(spec)
    return found


def _list_problems(spec: JobSpec) -> list[Problem]:
    assert spec.tasks is not None
    if len(spec.tasks) > MAX_TASKS:
        reason = f"{len(spec.tasks):,} tasks, over the limit of {MAX_TASKS:,}: split the job"
        return [Problem(("tasks",), f"({len(spec.tasks):,} items)", reason)]
    return []


def _template_problems(spec: JobSpec) -> list[Problem]:
    assert spec.template is not None and spec.matrix is not None
    found: list[Problem] = []
    matrix = spec.matrix
    if not matrix:
        reason = "empty: give at least one parameter and its values, like size: [1, 2]"
        return [Problem(("matrix",), "{}", reason)]
    room = [MAX_INPUT_BYTES]
    for key, values in matrix.items():
        if NAME.fullmatch(key) is None:
            reason = "a parameter name is a letter or _ then letters, digits or _ (as in {name})"
            found.append(Problem(("matrix", key), shown(key), reason))
        if not values:
            found.append(Problem(("matrix", key), "[]", "no values: give at least one"))
        for j, value in enumerate(values):
            found += _unplain(value, ("matrix", key, j), room)
    unplain = _unplain(spec.template.input, ("template", "input"), [MAX_INPUT_BYTES])
    found += unplain
    if not unplain:
        for loc, name in placeholders(spec.template.input, ("template", "input")):
            if name not in matrix:
                reason = (
                    f"placeholder {{{name}}} names no matrix parameter; the matrix has "
                    f"{', '.join(matrix)} (write {{{{{name}}}}} for the text {{{name}}})"
                )
                found.append(Problem(loc, "{" + name + "}", reason))
    count = math.prod(len(v) for v in matrix.values())
    if count > MAX_TASKS:
        sizes = " × ".join(f"{len(v)} {k}" for k, v in matrix.items())
        reason = f"makes {count:,} tasks ({sizes}), over the limit of {MAX_TASKS:,}: split the job"
        found.append(Problem(("matrix",), shown(matrix), reason))
    return found


def _task_problems(spec: JobSpec) -> list[Problem]:
    """Every derived task's input, as its driver will see it; one problem per place."""
    found: list[Problem] = []
    seen: set[tuple[Loc, str]] = set()
    total = 0
    for d in expanded(spec, own_inputs=False):
        # A template and its values were checked before being filled; a list's inputs not yet.
        unplain = _unplain(d.input, d.loc, [MAX_INPUT_BYTES]) if spec.tasks is not None else []
        problems: list[tuple[Loc, str, str]] = []
        size = 0
        if unplain:
            found += unplain
        elif isinstance(d.input, KeyClash):
            problems.append(((), "(keys)", str(d.input)))
        else:
            size = len(encode(d.input))
            problems += _driver_problems(d.driver, d.input, spec.timeout)
        total += size
        if size > MAX_INPUT_BYTES:
            reason = f"{size:,} bytes encoded, over the {MAX_INPUT_BYTES:,}-byte limit"
            problems.append(((), shown(d.input), reason))
        for sub, value, reason in problems:
            if (d.loc + sub, reason) not in seen:
                seen.add((d.loc + sub, reason))
                found.append(Problem(d.loc + sub, value, reason + d.origin))
        if total > MAX_JOB_INPUT_BYTES:
            reason = f"the inputs take over {MAX_JOB_INPUT_BYTES >> 20} MiB: split the job"
            found.append(Problem(d.loc, f"(by task {d.index})", reason))
        if len(found) > MAX_PROBLEMS or total > MAX_JOB_INPUT_BYTES:
            break
    return found


def _driver_problems(driver: str, value: Any, timeout: float) -> list[tuple[Loc, str, str]]:
    """What the worker's driver would refuse in this input, and a sleep that would time out."""
    problems = input_problems(driver, value, max_sleep_s=MAX_SLEEP_S)
    found = [
        (p.at, NOT_GIVEN if p.value is MISSING else shown(p.value), p.reason) for p in problems
    ]
    seconds_taken = not {(), ("seconds",)} & {p.at for p in problems}
    if driver == "sleep" and seconds_taken and value["seconds"] >= timeout:
        reason = f"not less than the timeout ({timeout:g}s), so every try times out: raise timeout"
        found.append((("seconds",), shown(value["seconds"]), reason))
    return found


def _unplain(value: Any, loc: Loc, room: list[int], depth: int = 0) -> list[Problem]:
    """The first place where `value` is not plain JSON/msgpack data, if any. `room` counts
    nodes down: YAML aliases can make a small file into a structure too large to walk."""
    room[0] -= 1
    top = loc[: len(loc) - depth]  # for a problem of the whole: its path would not be read
    if room[0] < 0:
        return [Problem(top, "(...)", f"too large: over {MAX_INPUT_BYTES:,} values")]
    if depth > _MAX_DEPTH:
        return [Problem(top, "(...)", f"nested deeper than {_MAX_DEPTH} levels")]
    if value is None or isinstance(value, bool | str):
        return []
    if isinstance(value, int):
        if -(1 << 63) <= value < 1 << 64:
            return []
        return [Problem(loc, shown(value), "a whole number beyond 64 bits: write it as text")]
    if isinstance(value, float):
        if math.isfinite(value):
            return []
        return [Problem(loc, shown(value), "not a finite number (JSON has no inf or nan)")]
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _unplain(item, (*loc, i), room, depth + 1)
            if found:
                return found
        return []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return [Problem(loc, shown(key), "a key must be text: quote it")]
            found = _unplain(item, (*loc, key), room, depth + 1)
            if found:
                return found
        return []
    if isinstance(value, date):  # and datetime: YAML reads unquoted times as these
        return [Problem(loc, shown(value), "a date or time is not JSON: quote it")]
    if isinstance(value, bytes):
        return [Problem(loc, shown(value), "binary data is not JSON: use text, like base64")]
    return [Problem(loc, shown(value), f"a {type(value).__name__} is not JSON: use a list")]
