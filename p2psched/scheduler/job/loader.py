"""Reading a job: a file (YAML, of which JSON is a part) or a document already read, into a
checked `JobSpec`.

Promises: a file is read at most MAX_JOB_FILE_BYTES, as UTF-8, with YAML's safe loader made
stricter (a key given twice, an alias to itself, or aliases past MAX_DOCUMENT_VALUES values are
refused); whatever is wrong raises `JobSpecError` naming the file, and nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from p2psched.scheduler.job.models import JobSpec
from p2psched.scheduler.job.problems import (
    MAX_PROBLEMS,
    JobSpecError,
    Problem,
    from_pydantic,
    shown,
)

MAX_JOB_FILE_BYTES = 64 << 20
MAX_DOCUMENT_VALUES = 1 << 24  # in a job file, each use of an alias counted anew
_KINDS = {str: "text", list: "a list", bool: "true or false", int: "a number", float: "a number"}


def load_job(path: Path) -> JobSpec:
    """Reads and checks a job file (YAML)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_JOB_FILE_BYTES + 1)
    except FileNotFoundError:
        raise JobSpecError(
            [f"{path}: no such file; pass the path of a job file, like examples/hello.yaml"]
        ) from None
    except OSError as e:
        raise JobSpecError(
            [f"{path}: cannot be read ({e.strerror or e}); check the path and its permissions"]
        ) from None
    if len(data) > MAX_JOB_FILE_BYTES:
        raise JobSpecError(
            [f"{path}: larger than {MAX_JOB_FILE_BYTES >> 20} MiB; split the job into several"]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JobSpecError([f"{path}: byte {e.start}: not UTF-8 text; save it as UTF-8"]) from None
    return parse_job(_read_yaml(text, str(path)), source=str(path))


def parse_job(doc: Any, *, source: str = "<job>") -> JobSpec:
    """Checks a job already read from YAML or JSON; `source` names it in errors."""
    if not isinstance(doc, dict):
        kind = _KINDS.get(type(doc), f"a {type(doc).__name__}")
        what = "empty" if doc is None else f"{kind}, not a mapping"
        reason = f"{what}: a job is a mapping with name: and tasks: (or template: and matrix:)"
        raise JobSpecError([Problem((), shown(doc), reason).line(source)])
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as e:
        problems = [p for err in e.errors() for p in from_pydantic(err, JobSpec)]
        lines = [p.line(source) for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"{source}: ... more problems not shown; fix these first")
        raise JobSpecError(lines) from None


class _Refused(yaml.MarkedYAMLError):
    """YAML that is well formed but not taken."""


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, but a key written twice in one mapping is an error (YAML would keep
    the last silently, and a doubled `resources:` loses the first), and so is a document that
    aliases make larger than MAX_DOCUMENT_VALUES values or make contain itself: everything
    after reading walks the values as if each alias were a copy."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id of a node read -> values in it, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        alias = self.check_event(yaml.AliasEvent)
        node = super().compose_node(parent, index)
        if node is None or id(node) in self._sizes:
            return node
        mark = node.start_mark
        if alias:  # an alias to a node not finished: one of its own ancestors
            raise _Refused(None, None, "this contains an alias to itself", mark)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        size = 1 + sum(self._sizes[id(child)] for child in children)
        if size > MAX_DOCUMENT_VALUES:
            raise _Refused(
                None, None, f"over {MAX_DOCUMENT_VALUES:,} values with its aliases expanded", mark
            )
        self._sizes[id(node)] = size
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    raise _Refused(
                        None, None, f"the key {key.value!r} is given twice", key.start_mark
                    )
                seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)


def _read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = "refused" if isinstance(e, _Refused) else "not valid YAML"
        raise JobSpecError([f"{source}: {where}: {what}: {e.problem or e}"]) from None
    except yaml.YAMLError as e:
        raise JobSpecError([f"{source}: not valid YAML: {e}"]) from None
    except RecursionError:
        raise JobSpecError([f"{source}: nested too deeply to read"]) from None
