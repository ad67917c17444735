"""The drivers a worker may run (`KNOWN_DRIVERS`) and the input each takes, checked here for
both sides of a deal: the job spec checks every task's input before it is sent, and a worker's
driver checks the input it was sent (any scheduler may send one) before it runs it.

Promises: `input_problems` is empty exactly when the driver takes the input as it is written
(what only the worker knows aside: which programs it allows, which models it serves); each
problem says where in the input it is, what is there and why it is refused. `input_refusal`
words the first one as a worker's driver refuses its task: the field and what it must be.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any, Final

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
        "args": _Field(False, "a list of text without NUL characters"),
        "stdin": _Field(False, "text"),
    },
}
# What a driver's input is, as a job writes it.
_WRITTEN = {
    "sleep": "{seconds: N}",
    "command": "{program: NAME, args: [TEXT, ...], stdin: TEXT}",
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
    found = [InputProblem((k,), v, unknown) for k, v in value.items() if k not in fields]
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
        reason = "must be the name of a program the worker allows ([drivers.command] allow)"
        found.append(InputProblem(("program",), program, reason))
    args = value.get("args", [])
    if not isinstance(args, list):
        found.append(InputProblem(("args",), args, "must be a list of text"))
    else:
        for i, arg in enumerate(args):
            if not isinstance(arg, str):
                # Likeliest cause: an argument that is exactly "{param}" over numbers.
                reason = 'must be text: quote it, or write it inside text ("--n={n}")'
                found.append(InputProblem(("args", i), arg, reason))
            elif "\0" in arg:
                found.append(InputProblem(("args", i), arg, "must not contain NUL characters"))
    if "stdin" in value and not isinstance(value["stdin"], str):
        found.append(InputProblem(("stdin",), value["stdin"], "must be text"))
    return found
