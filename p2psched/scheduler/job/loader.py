"""Reading a job: a file (YAML, of which JSON is a part) or a document already read, into a
checked `JobSpec`.

Promises: a file is read at most MAX_JOB_FILE_BYTES, as UTF-8, with YAML's safe loader made
stricter (a key given twice, an alias to itself, aliases past MAX_DOCUMENT_VALUES values,
nesting past MAX_NESTING, a value its tag cannot take are refused); whatever is wrong raises
`JobSpecError` naming the file, and nothing else escapes. libyaml's parser reads it where
PyYAML has libyaml, else PyYAML's own: the same values, and the same errors in the same words
(but for the few texts libyaml alone refuses: a byte-order mark inside a document, an escape
of half a UTF-16 pair).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
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
# Levels of lists and mappings in a job file: fewer than either parser reaches (libyaml 1,000,
# PyYAML's own some 490 by Python's recursion limit), so both refuse the same files.
MAX_NESTING = 200
# How far into a file libyaml's syntax error may be for PyYAML's parser to read it again, to
# word it as it does (which takes it seconds a MiB).
REWORD_BYTES = 4 << 20
_KINDS = {str: "text", list: "a list", bool: "true or false", int: "a number", float: "a number"}


def load_job(path: Path) -> JobSpec:
    """Reads and checks a job file (YAML)."""
    return parse_job(read_job(path), source=str(path))


def read_job(path: Path) -> Any:
    """A job file's document (YAML), not yet checked: what `load_job` checks."""
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
    return read_yaml(text, str(path))


def parse_job(doc: Any, *, source: str = "<job>") -> JobSpec:
    """Checks a job already read from YAML or JSON; `source` names it in errors."""
    if not isinstance(doc, dict):
        kind = _KINDS.get(type(doc), f"a {type(doc).__name__}")
        what = "empty" if doc is None else f"{kind}, not a mapping"
        reason = f"{what}: a job is a mapping with name: and tasks: (or template: and matrix:)"
        raise JobSpecError([Problem((), shown(doc), reason).line(source)])
    try:
        with collector_paused():
            return JobSpec.model_validate(doc)
    except ValidationError as e:
        problems = [p for err in e.errors() for p in from_pydantic(err, JobSpec)]
        lines = [p.line(source) for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"{source}: ... more problems not shown; fix these first")
        raise JobSpecError(lines) from None


class _Refused(yaml.MarkedYAMLError):
    """YAML that is well formed but not taken."""


class _StrictConstruction(yaml.constructor.SafeConstructor):
    """The safe constructor, but a key written twice in one mapping is an error: YAML would
    keep the last silently, and a doubled `resources:` loses the first; and a value its tag
    cannot take (`2030-13-01`, `!!int abc`) is refused where it is written."""

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


def _marked(construct: Callable[[Any, yaml.Node], Any]) -> Callable[[Any, yaml.Node], Any]:
    """`construct` (of a scalar), refusing what it cannot read where it is written: PyYAML lets
    these out bare (a ValueError "month must be in 1..12", no line)."""

    def marked(self: Any, node: yaml.Node) -> Any:
        try:
            return construct(self, node)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
            why = f" ({e})" if type(e) is ValueError else ""
            what = f"{shown(node.value)} is not a valid {node.tag.rpartition(':')[2]}{why}"
            raise yaml.constructor.ConstructorError(None, None, what, node.start_mark) from None

    return marked


# The scalars that can fail (text cannot): only these pay for the check.
for _tag in ("bool", "int", "float", "timestamp"):
    _StrictConstruction.add_constructor(
        f"tag:yaml.org,2002:{_tag}",
        _marked(yaml.constructor.SafeConstructor.yaml_constructors[f"tag:yaml.org,2002:{_tag}"]),
    )


class _PythonLoader(_StrictConstruction, yaml.SafeLoader):
    """PyYAML's own parser, in Python: what reads a job where libyaml is not installed."""


_LibyamlLoader: type[_StrictConstruction] | None = None
if yaml.__with_libyaml__:

    class _LibyamlLoader(_StrictConstruction, yaml.CSafeLoader):  # type: ignore[no-redef]
        """libyaml's parser, in C (a file read in a fourth to a sixth of the time), under the same
        construction."""


LIBYAML = _LibyamlLoader is not None  # whether job files are parsed by libyaml


def read_yaml(text: str, source: str, *, libyaml: bool = LIBYAML) -> Any:
    """The one document in `text`, read with libyaml's parser if `libyaml` (and it is
    installed), else with PyYAML's own; either way the same values, or the same refusal."""
    try:
        with collector_paused():
            return _read(_LibyamlLoader if libyaml and _LibyamlLoader else _PythonLoader, text)
    except yaml.MarkedYAMLError as e:
        if _too_deep(e):
            raise JobSpecError([f"{source}: nested too deeply to read"]) from None
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = "refused" if isinstance(e, _Refused) else "not valid YAML"
        raise JobSpecError([f"{source}: {where}: {what}: {e.problem or e}"]) from None
    except yaml.YAMLError as e:
        raise JobSpecError([f"{source}: not valid YAML: {e}"]) from None
    except RecursionError:
        raise JobSpecError([f"{source}: nested too deeply to read"]) from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        # (what a tag cannot take in a list or mapping, like `!!map [1]`: no node is named)
        what = f"{type(e).__name__}: {e}"
        raise JobSpecError(
            [f"{source}: not valid YAML: a value its tag cannot take ({what})"]
        ) from None


def _read(cls: type[_StrictConstruction], text: str) -> Any:
    loader: Any = cls(text)  # type: ignore[call-arg]
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as e:
            reword = cls is _LibyamlLoader and not _too_deep(e)
            raise _worded_by_python(text, e) if reword else e from None
        if node is None:
            return None
        _check_aliases(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _worded_by_python(text: str, e: yaml.YAMLError) -> yaml.YAMLError:
    """What PyYAML's own parser says of the text libyaml refused with `e`, if it refuses at the
    same line: so a person reads the same words from either. It reads the text again only up
    to that line (and not past REWORD_BYTES: then libyaml's own words)."""
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not take
        try:
            yaml.reader.Reader(text)
        except yaml.reader.ReaderError as again:
            return again
        return e
    mark = e.problem_mark if isinstance(e, yaml.MarkedYAMLError) else None
    if mark is None or mark.index > REWORD_BYTES:
        return e
    end = 0
    for _ in range(mark.line + 1):
        end = text.find("\n", end) + 1
        if end == 0:
            end = len(text)
            break
    try:
        _PythonLoader(text[:end]).get_single_node()
    except yaml.MarkedYAMLError as again:
        if again.problem_mark is not None and again.problem_mark.line == mark.line:
            return again
    except (yaml.YAMLError, RecursionError):
        pass
    return e


def _check_aliases(root: yaml.Node) -> None:
    """Refuses a document that aliases make contain itself or larger than MAX_DOCUMENT_VALUES
    values (everything after reading walks the values as if each alias were a copy), or that
    nests deeper than MAX_NESTING. The nodes are walked in the order they are written (in a
    loop: the depth is the file's), so the first problem in the file is the one named."""
    # Values in each list or mapping walked, aliases expanded, by id; a scalar is one value.
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # ids of the lists and mappings being walked: the path to here
    stack: list[tuple[yaml.Node, int]] = [(root, 0)]  # depth; -1: its children are walked
    while stack:
        node, depth = stack.pop()
        if depth < 0:
            size = 1 + sum(sizes.get(id(child), 1) for child in _children(node))
            if size > MAX_DOCUMENT_VALUES:
                reason = f"over {MAX_DOCUMENT_VALUES:,} values with its aliases expanded"
                raise _Refused(None, None, reason, node.start_mark)
            sizes[id(node)] = size
            open_.discard(id(node))
        elif id(node) not in sizes:
            if id(node) in open_:  # an alias to a node not finished: one of its own ancestors
                raise _Refused(None, None, "this contains an alias to itself", node.start_mark)
            if depth > MAX_NESTING:
                raise RecursionError  # as Python's parser meets it, a little deeper
            open_.add(id(node))
            stack.append((node, -1))
            stack.extend(
                (child, depth + 1)
                for child in reversed(_children(node))
                if not isinstance(child, yaml.ScalarNode)
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def _too_deep(e: yaml.YAMLError) -> bool:
    # libyaml stops at 1,000 levels where Python's parser meets its recursion limit first.
    return str(getattr(e, "problem", "")).endswith("exceeded maximum nesting depth")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off for a while (a decorator too): reading a large job, or
    taking it on, makes millions of objects that all live on, and each full pass walks all of
    them and the rest of the heap (reading a 20,000-task file took 4 times as long with it on;
    of submitting it to a node, a third of the time went to it)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
