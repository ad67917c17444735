"""The drivers a worker may run (`KNOWN_DRIVERS`) and the input each takes, checked here for
both sides of a deal: the job spec checks every task's input before it is sent, and a worker's
driver checks the input it was sent (any scheduler may send one) before it runs it.

Promises: `input_problems` is empty exactly when the driver takes the input as it is written
(what only the worker knows aside: which programs it allows, which models it serves); each
problem says where in the input it is, what is there and why it is refused. `input_refusal`
words the first one as a worker's driver refuses its task: the field and what it must be.
A command's input never carries free arguments: it names a program and gives values to the
parameters its worker declares (`ParamRule`, checked by `param_refusal`), with data as files in
the task's scratch directory (`scratch_name_refusal`) or on stdin.
"""

from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any, Final, Literal

KNOWN_DRIVERS = ("sleep", "echo", "command", "http")

InputPath = tuple[str | int, ...]


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


MISSING: Final = _Missing()  # what a problem shows for a required field that is not there


@dataclass(frozen=True, slots=True)
class InputProblem:
    at: InputPath  # where in the input: () the whole of it, ("args", 1) its second argument
    value: Any  # what is there; MISSING for a required field that is not
    reason: str  # for the job's author: what is wrong there, and the fix when there is one


@dataclass(frozen=True, slots=True)
class _Field:
    required: bool
    shape: str  # what it must be, as a worker's driver says so: "input.args must be <shape>"


# The drivers whose input is a mapping of known fields; http takes any mapping (the JSON body it
# posts) and echo anything.
_FIELDS: dict[str, dict[str, _Field]] = {
    "sleep": {"seconds": _Field(True, "a finite number >= 0")},
    "command": {
        "program": _Field(True, "a name"),
        "params": _Field(False, "a mapping of parameter name to a value (text, number, true)"),
        "files": _Field(False, "a mapping of file name to its text"),
        "stdin": _Field(False, "text"),
    },
}
# What a driver's input is, as a job writes it.
_WRITTEN = {
    "sleep": "{seconds: N}",
    "command": "{program: NAME, params: {NAME: VALUE}, files: {NAME: TEXT}, stdin: TEXT}",
    "http": "a mapping: the JSON body it posts to the model's endpoint",
}


def _takes(driver: str) -> str:
    fields = _FIELDS[driver]
    return ", ".join(f"{k}{'' if f.required else ' (optional)'}" for k, f in fields.items())


def input_problems(driver: str, value: Any, *, max_sleep_s: float = math.inf) -> list[InputProblem]:
    """What `driver` would refuse in `value`, in the order of its fields. `max_sleep_s` is the
    longest sleep taken: a worker's sleep driver runs any its timeout allows, a job asks for at
    most a day."""
    if driver not in _WRITTEN:
        return []
    if not isinstance(value, dict):
        return [InputProblem((), value, f"the {driver} driver takes {_WRITTEN[driver]}")]
    fields = _FIELDS.get(driver)
    if fields is None:
        return []
    unknown = f"unknown field; the {driver} driver takes {', '.join(fields)}"
    found = [
        InputProblem((k,), v, _FREE_ARGS if (driver, k) == ("command", "args") else unknown)
        for k, v in value.items()
        if k not in fields
    ]
    if driver == "sleep":
        found += _sleep_problems(value, max_sleep_s)
    else:
        found += _command_problems(value)
    return found


def input_refusal(driver: str, value: Any) -> str | None:
    """None if `driver` takes `value`; else the one line a worker's driver refuses it with."""
    problems = input_problems(driver, value)
    if not problems:
        return None
    at, found = problems[0].at, problems[0].value
    if not at:
        shape = f"with {_takes(driver)}" if driver in _FIELDS else "(the JSON body)"
        return f"input must be a mapping {shape}, not {type(value).__name__}"
    name, fields = at[0], _FIELDS[driver]
    if found is MISSING:
        return f"input.{name} is missing; input takes {_takes(driver)}"
    if (driver, name) == ("command", "args"):
        return f"input.args: {_FREE_ARGS}"
    if name not in fields:
        return f"input has an unknown field {str(name)[:64]!r}; it takes {_takes(driver)}"
    # A field's own value is worth showing; an item of a list is shown by the job spec alone.
    shown = f", not {reprlib.repr(found)}" if len(at) == 1 else ""
    return f"input.{name} must be {fields[str(name)].shape}{shown}"


def _sleep_problems(value: dict[Any, Any], max_s: float) -> list[InputProblem]:
    if "seconds" not in value:
        reason = f"required: how long to sleep, 0..{max_s:g} seconds"
        return [InputProblem(("seconds",), MISSING, reason)]
    s = value["seconds"]
    if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s < math.inf or s > max_s:
        return [InputProblem(("seconds",), s, f"must be a number of seconds, 0..{max_s:g}")]
    return []


def _command_problems(value: dict[Any, Any]) -> list[InputProblem]:
    found: list[InputProblem] = []
    program = value.get("program")
    if "program" not in value:
        reason = "required: a program the worker allows, by name"
        found.append(InputProblem(("program",), MISSING, reason))
    elif not isinstance(program, str) or not 0 < len(program) <= 128:
        reason = "must be the name of a program the worker allows ([drivers.command.programs])"
        found.append(InputProblem(("program",), program, reason))
    params = value.get("params", {})
    if not isinstance(params, dict) or len(params) > MAX_ITEMS:
        reason = f"must be a mapping of at most {MAX_ITEMS} parameters"
        found.append(InputProblem(("params",), params, reason))
    else:
        for name, v in params.items():
            if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
                found.append(InputProblem(("params",), name, "a parameter's name is 1-64 letters"))
            elif isinstance(v, float) or not isinstance(v, str | int):
                reason = "must be text, a whole number, or true/false"
                found.append(InputProblem(("params", name), v, reason))
    files = value.get("files", {})
    if not isinstance(files, dict) or len(files) > MAX_ITEMS:
        reason = f"must be a mapping of at most {MAX_ITEMS} file names to their text"
        found.append(InputProblem(("files",), files, reason))
    else:
        for name, text in files.items():
            refusal = scratch_name_refusal(name)
            if refusal is not None:
                found.append(InputProblem(("files",), name, refusal))
            elif not isinstance(text, str):
                found.append(InputProblem(("files", name), text, "must be text"))
    if "stdin" in value and not isinstance(value["stdin"], str):
        found.append(InputProblem(("stdin",), value["stdin"], "must be text"))
    return found


# -- the parameters a worker declares for a program, and the values a task gives them ----------

MAX_ITEMS = 64  # parameters, or files, in one task's input
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
# A file of the task's scratch directory, by its bare name: no folder, nothing hidden, no option.
_SCRATCH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_FREE_ARGS = (
    "free arguments are not taken: give the program's named parameters in params "
    "(its worker's operator declares them in [drivers.command.programs]), and its data in "
    "files or stdin"
)

ParamType = Literal["flag", "integer", "string", "file"]


@dataclass(frozen=True, slots=True)
class ParamRule:
    """One parameter a worker's operator declares for a program: its type and bounds, and the
    option written before its value (`arg`), or none for a positional one (after `--`)."""

    type: ParamType
    arg: str | None = None
    min: int = 0
    max: int = 2**31 - 1
    max_length: int = 256


def scratch_name_refusal(name: Any) -> str | None:
    """None if `name` names a file directly inside a task's scratch directory; else why not."""
    if isinstance(name, str) and _SCRATCH_NAME.fullmatch(name):
        return None
    return (
        "must be a file name inside the task's scratch directory: 1-128 letters, digits, "
        "'.', '_', '-', not starting with '.' or '-', without '/'"
    )


def param_refusal(rule: ParamRule, value: Any) -> str | None:
    """None if `value` is of `rule`'s type and within its bounds; else what it must be."""
    if rule.type == "flag":
        return None if isinstance(value, bool) else "must be true or false"
    if rule.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number, {rule.min}..{rule.max}"
        return None if rule.min <= value <= rule.max else f"must be {rule.min}..{rule.max}"
    if rule.type == "file":
        return scratch_name_refusal(value)
    if not isinstance(value, str) or not 0 < len(value) <= rule.max_length:
        return f"must be text of 1..{rule.max_length} characters"
    if value.startswith("-") or "\0" in value:
        return "must not start with '-' or hold a NUL character"
    return None
