"""What is wrong with a job, as a person reads it: one `Problem` per place, each a line
"<file>: <field path>: <value>: <reason>", and `JobSpecError` carrying all of them.

Owns: the wording of field paths and values (cut short, however large or shared a value is) and
the translation of pydantic's errors into problems. Promises: a value is never shown longer than
60 characters, and a path reads as it is written in the file (`tasks[0].input.seconds`).
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

MAX_PROBLEMS = 10  # listed in one error; past that the first ones are what to fix
NOT_GIVEN = "(missing)"  # shown for a required field that is not there

Loc = tuple[str | int, ...]

# A matrix parameter's name, which is also a key a path writes after a dot.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel, _repr.maxdict, _repr.maxlist = 3, 4, 6


class JobSpecError(ValueError):
    """A job that cannot be run as written: one line per problem, "<file>: <field>: <value>:
    <reason>", so a person can fix them all in one pass."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = tuple(lines)


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc
    shown: str
    reason: str

    def line(self, source: str) -> str:
        head = f"{source}: " if source else ""
        return f"{head}{_path(self.loc)}: {self.shown}: {self.reason}"


def refuse(reason: str) -> PydanticCustomError:
    """What a field's own check raises: pydantic places it, `from_pydantic` words it."""
    # The reason goes in as context, not as the template: a reason may quote braces.
    return PydanticCustomError("job_spec", "{reason}", {"reason": reason})


def refuse_all(problems: list[Problem]) -> PydanticCustomError:
    """What the whole job's check raises; `from_pydantic` takes the problems back out."""
    summary = "; ".join(p.line("") for p in problems)
    # "problems" first: context values are put into the template in order.
    return PydanticCustomError(
        "job_spec_problems", "{summary}", {"problems": problems, "summary": summary}
    )


def shown(value: Any) -> str:
    # reprlib, because a value can be a huge (or, through YAML aliases, shared) structure.
    return short(_repr.repr(value))


def short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":  # pydantic's mark for a mapping's key
            out += " (the key)"
        elif NAME.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out or "(document)"


def _model_within(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_within(arg)
        if found is not None:
            return found
    return None


def _fields_at(root: type[BaseModel], loc: Loc) -> list[str]:
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _model_within(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def from_pydantic(err: Any, root: type[BaseModel]) -> list[Problem]:
    """The problems in one of pydantic's errors about a `root` model: a field's own, or the
    whole job's (which the model's last check hands over as they are)."""
    kind, loc = err["type"], tuple(err["loc"])
    if kind == "job_spec_problems":
        return list(err["ctx"]["problems"])
    value = NOT_GIVEN if kind == "missing" else shown(err["input"])
    reason = {
        "missing": "required",
        "model_type": "must be a mapping",
        "dict_type": "must be a mapping",
        "list_type": "must be a list",
        "too_short": "must not be empty",
        "int_type": "must be a whole number",
        "float_type": "must be a number",
        "string_type": "must be text",
        "invalid_key": "a field name must be text",
    }.get(kind)
    if kind == "extra_forbidden":
        reason = f"unknown field; known: {', '.join(_fields_at(root, loc[:-1]))}"
    if reason is None:
        reason = str(err["msg"]).replace("Input should be", "must be", 1)
    return [Problem(loc, value, reason)]
