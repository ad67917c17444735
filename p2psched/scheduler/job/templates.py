"""Templated tasks: a template's input filled with one row of the parameter matrix, by the
rules `JobSpec` gives ("{p}" in text, a whole "{p}", "{{p}}"); any other brace is text.

Promises: each filled input is a new copy that shares nothing with the template, its values or
its siblings; a filled key that clashes with another raises `KeyClash`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from p2psched.scheduler.job.problems import Loc

# "{name}" is a placeholder; "{{name}}" is the literal text "{name}"; other braces are text.
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME_VALUE_CHARS = 40  # of each matrix value in a templated task's name


class KeyClash(ValueError):
    def __init__(self, key: str, filled: str) -> None:
        super().__init__(f"the key {key!r} becomes {filled!r}, as another key of its mapping does")
        self.key = key


def as_text(value: Any) -> str:
    """A matrix value as it reads inside text and in task names: JSON, but text bare."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def name_part(text: str) -> str:
    """A value's text as it appears in a task's name ("k1=v1,k2=v2")."""
    # A task's name is one short line in listings; its input keeps the whole value.
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _NAME_VALUE_CHARS else text[: _NAME_VALUE_CHARS - 3] + "..."


def fill(value: Any, params: Mapping[str, Any], texts: Mapping[str, str]) -> Any:
    """A new copy of `value` with the placeholders replaced by the values or their texts."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole is not None and whole[2] is not None:
            return copied(params[whole[2]])
        return _fill_text(value, texts)
    if isinstance(value, list):
        return [fill(v, params, texts) for v in value]
    if isinstance(value, dict):
        filled: dict[str, Any] = {}
        for key, item in value.items():
            new_key = _fill_text(key, texts)
            if new_key in filled:
                raise KeyClash(key, new_key)
            filled[new_key] = fill(item, params, texts)
        return filled
    return value


def _fill_text(text: str, texts: Mapping[str, str]) -> str:
    if "{" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: "{" + m[1] + "}" if m[1] is not None else texts[m[2]], text)


def copied(value: Any) -> Any:
    """A deep copy of plain data."""
    # Each task owns its input: whoever changes one must not change its siblings or the spec.
    if isinstance(value, list):
        return [copied(v) for v in value]
    if isinstance(value, dict):
        return {k: copied(v) for k, v in value.items()}
    return value


def placeholders(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Where `value` (found at `loc`) names a parameter, and which."""
    if isinstance(value, str):
        for m in _PLACEHOLDER.finditer(value):
            if m[2] is not None:
                yield loc, m[2]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from placeholders(item, (*loc, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from placeholders(key, (*loc, key))
            yield from placeholders(item, (*loc, key))
