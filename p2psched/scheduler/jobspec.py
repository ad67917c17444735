"""The job spec (job.yaml): reading and checking a job, and deriving its tasks and their needs.

Promises: a job that loads derives at most MAX_TASKS tasks whose inputs are plain JSON data that
their driver accepts; a bad job raises `JobSpecError`, one line per problem with the file, the
field path, the value and the reason, before anything is sent.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import reprlib
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from p2psched.resources.need import Clause, Need
from p2psched.resources.profile import gpu_family
from p2psched.wire.codec import MAX_MESSAGE_BYTES, encode
from p2psched.worker.config import KNOWN_DRIVERS

MAX_TASKS = 100_000
DEFAULT_MTR = 0.001  # money per second of waiting, when a job gives neither mtr nor deadline
MAX_PROBLEMS = 10  # listed in one error; past that the first ones are what to fix
# An input travels inside one wire message together with its envelope.
MAX_INPUT_BYTES = MAX_MESSAGE_BYTES // 2
# All inputs of a job together: the scheduler keeps them in memory and in its store.
MAX_JOB_INPUT_BYTES = 256 << 20
MAX_JOB_FILE_BYTES = 64 << 20
MAX_DOCUMENT_VALUES = 1 << 24  # in a job file, each use of an alias counted anew
MAX_SLEEP_S = 86_400.0
MAX_DURATION_S = 365 * 86_400.0
_MAX_DEPTH = 32
_NAME_VALUE_CHARS = 40  # of each matrix value in a templated task's name

Loc = tuple[str | int, ...]

_JOB_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_KEY = re.compile(r"[a-z_][a-z0-9_.]{0,31}")  # what Need.parse reads as label.KEY
# "{name}" is a placeholder; "{{name}}" is the literal text "{name}"; other braces are text.
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_INF_WORDS = ("inf", "infinity", ".inf")
_MISSING = "(missing)"
_KINDS = {str: "text", list: "a list", bool: "true or false", int: "a number", float: "a number"}
# Resources field -> the Need clause it becomes, in the order a need is shown.
_NEED_CLAUSES = (
    ("cpus", "cpus", ">="),
    ("ram_gb", "ram", ">="),
    ("gpu", "gpu", "="),
    ("gpus", "gpus", ">="),
    ("vram_gb", "vram", ">="),
    ("model", "model", "="),
)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel, _repr.maxdict, _repr.maxlist = 3, 4, 6


class JobSpecError(ValueError):
    """A job that cannot be run as written: one line per problem, "<file>: <field>: <value>:
    <reason>", so a person can fix them all in one pass."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = tuple(lines)


def _refuse(reason: str) -> PydanticCustomError:
    # The reason goes in as context, not as the template: a reason may quote braces.
    return PydanticCustomError("job_spec", "{reason}", {"reason": reason})


def _shown(value: Any) -> str:
    # reprlib, because a value can be a huge (or, through YAML aliases, shared) structure.
    return _short(_repr.repr(value))


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _job_name(v: str) -> str:
    if _JOB_NAME.fullmatch(v) is None or set(v) == {"."}:
        raise _refuse(
            "must be 1..64 characters of A-Z a-z 0-9 . _ - and not only dots "
            "(it names the directory results/<job>/)"
        )
    return v


def _driver(v: str) -> str:
    if v not in KNOWN_DRIVERS:
        raise _refuse(f"unknown driver; known: {', '.join(KNOWN_DRIVERS)}")
    return v


def _need_text(v: str) -> str:
    # The need is shown and sent as text "gpu=A100,model=..."; this keeps it readable back.
    if not 0 < len(v) <= 128 or v != v.strip() or "," in v or not v.isprintable():
        raise _refuse("must be 1..128 printable characters, without commas or outer spaces")
    return v


def _gpu_name(v: str) -> str:
    family = gpu_family(v)
    if family.isdigit():
        # Workers report "RTX4090" for an "NVIDIA GeForce RTX 4090": a bare number never matches.
        raise _refuse(f"names no GPU family; write the model with its series, like 'RTX {v}'")
    return v


def _label_key(v: str) -> str:
    if _LABEL_KEY.fullmatch(v) is None:
        raise _refuse("a label name is 1..32 of a-z 0-9 _ . starting with a letter or _")
    return v


def _task_name(v: str) -> str:
    if not 0 < len(v) <= 128 or not v.isprintable():
        raise _refuse("must be 1..128 printable characters")
    return v


def _amount(inf_means: str) -> BeforeValidator:
    def check(v: Any) -> float:
        if isinstance(v, str) and v.strip().lower() in _INF_WORDS:
            return math.inf
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
            raise _refuse(f'must be a number >= 0, or "inf" for {inf_means}')
        return float(v)

    return BeforeValidator(check)


def _duration(v: Any) -> float:
    """Seconds from a number of seconds or a text like "90s", "5m", "1h30m", "500ms", "2d"."""
    if isinstance(v, str) and _DURATION.fullmatch(v):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(v))
    elif isinstance(v, int | float) and not isinstance(v, bool):
        seconds = float(v)
    else:
        raise _refuse('must be seconds (a number) or a duration like "90s", "5m", "1h30m", "500ms"')
    if not 0 < seconds <= MAX_DURATION_S:
        raise _refuse("must be more than 0 and at most 365 days")
    return seconds


def _deadline(v: Any) -> float | datetime | None:
    """Seconds after submission (float) or an absolute, time-zoned datetime."""
    if v is None:
        return None
    if isinstance(v, str) and not _DURATION.fullmatch(v):
        try:
            v = datetime.fromisoformat(v.strip())
        except ValueError:
            raise _refuse(
                'must be a duration from submission ("2h") or an ISO 8601 time with a zone '
                '("2030-06-01T18:00:00+02:00")'
            ) from None
    if isinstance(v, datetime):
        if v.tzinfo is None or v.utcoffset() is None:
            raise _refuse("has no time zone: add Z (UTC) or an offset like +02:00")
        return v
    if isinstance(v, date):  # YAML reads an unquoted 2030-06-01 as a date
        raise _refuse('a date is not a time: write "2030-06-01T18:00:00Z"')
    return _duration(v)


_Driver = Annotated[str, AfterValidator(_driver)]
_NeedText = Annotated[str, AfterValidator(_need_text)]
_GpuName = Annotated[str, AfterValidator(_need_text), AfterValidator(_gpu_name)]
_LabelKey = Annotated[str, AfterValidator(_label_key)]
_TaskName = Annotated[str, AfterValidator(_task_name)]
_Duration = Annotated[float, BeforeValidator(_duration)]
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class Resources(BaseModel):
    """What one task needs of a worker; an absent field asks for nothing. A task's resources
    are laid over the job's field by field (labels key by key); `null` drops the job's value."""

    model_config = _STRICT

    cpus: int | None = Field(default=None, ge=1, le=4096)
    ram_gb: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    gpu: _GpuName | None = None  # a GPU family: "A100", "H100", "RTX 4090"
    gpus: int | None = Field(default=None, ge=1, le=64)
    vram_gb: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # on the largest GPU
    model: _NeedText | None = None  # installed or loaded on the worker
    labels: dict[_LabelKey, _NeedText] | None = None


class TaskItem(BaseModel):
    model_config = _STRICT

    input: Any
    name: _TaskName | None = None
    driver: _Driver | None = None
    resources: Resources | None = None


class Template(BaseModel):
    model_config = _STRICT

    input: Any
    driver: _Driver | None = None
    resources: Resources | None = None


class Budget(BaseModel):
    """Money per task and for the whole job; without one there is no limit."""

    model_config = _STRICT

    max_price_per_task: Annotated[float, _amount("no limit")] = math.inf
    total: Annotated[float, _amount("no limit")] = math.inf


class JobSpec(BaseModel):
    """A checked job. The file, with every field but name and the tasks optional:

        name: resize                # 1..64 of [A-Za-z0-9._-]; results go to results/<name>/
        driver: echo                # sleep | echo | command | http; a task may name another
        resources: {cpus: 2, ram_gb: 4, gpu: A100, gpus: 1, vram_gb: 40, model: llama-3-8b,
                    labels: {region: eu}}
        tasks:                      # either a list ...
          - {name: first, input: {seconds: 1}, driver: sleep, resources: {cpus: 4}}
        template: {input: {text: "size {size}", size: "{size}"}}   # ... or a template
        matrix: {size: [1, 2, 3]}   # over the cartesian product, the first parameter slowest
        budget: {max_price_per_task: 0.02, total: 5}   # default: no limit
        mtr: 0.001                  # money one second of waiting is worth (the default);
                                    # 0: only the cheapest worker; inf: the fastest
        deadline: 2h                # or "2030-06-01T18:00:00Z"; with mtr: the workers
                                    # expected to finish in time, scored by it
        retries: 2
        timeout: 10m                # per try of a task
        priority: 5                 # 0..9, 9 most urgent

    In a template, "{p}" inside text is replaced by the value as text, a text that is exactly
    "{p}" becomes the value itself (a number stays a number), and "{{p}}" is the text "{p}".
    """

    model_config = _STRICT

    name: Annotated[str, AfterValidator(_job_name)]
    driver: _Driver = "echo"
    resources: Resources = Resources()
    tasks: list[TaskItem] | None = Field(default=None, min_length=1)
    template: Template | None = None
    matrix: dict[str, list[Any]] | None = None
    budget: Budget = Budget()
    # 0 means the cheapest worker only, however long the wait: too strict to be a default,
    # so the default trades a thousandth of the money unit per second of waiting.
    mtr: Annotated[float, _amount("the fastest worker, whatever it costs")] = DEFAULT_MTR
    deadline: Annotated[float | datetime | None, BeforeValidator(_deadline)] = None
    retries: int = Field(default=2, ge=0, le=100)
    timeout: _Duration = 600.0
    priority: int = Field(default=5, ge=0, le=9)

    @model_validator(mode="after")
    def _whole_job(self) -> JobSpec:
        problems = _problems(self)
        if problems:
            summary = "; ".join(p.line("") for p in problems)
            # "problems" first: context values are put into the template in order.
            raise PydanticCustomError(
                "job_spec_problems", "{summary}", {"problems": problems, "summary": summary}
            )
        return self


@dataclass(frozen=True, slots=True)
class TaskSpec:
    task_id: str  # "<job>-<index:06d>"
    index: int
    name: str  # the item's name (default: its index), or "k1=v1,k2=v2" (values cut at 40)
    driver: str
    input: Any  # plain JSON data, this task's own copy
    need: Need
    timeout_s: float
    max_price: float  # math.inf when unlimited
    retries: int
    priority: int


@dataclass(frozen=True, slots=True)
class _Problem:
    loc: Loc
    shown: str
    reason: str

    def line(self, source: str) -> str:
        head = f"{source}: " if source else ""
        return f"{head}{_path(self.loc)}: {self.shown}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _Derived:
    index: int
    name: str
    driver: str
    resources: Resources | None  # laid over the job's
    input: Any
    loc: Loc  # where in the file this task's input was written
    origin: str  # for a problem found in a template's task: which task


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
        raise JobSpecError([_Problem((), _shown(doc), reason).line(source)])
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as e:
        problems = [p for err in e.errors() for p in _from_pydantic(err)]
        lines = [p.line(source) for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"{source}: ... more problems not shown; fix these first")
        raise JobSpecError(lines) from None


def derive_tasks(spec: JobSpec) -> list[TaskSpec]:
    """The job's tasks in order, each with its driver, input, need and limits."""
    price = spec.budget.max_price_per_task
    needs: dict[Hashable, Need] = {}  # tasks that ask for the same share one Need
    tasks: list[TaskSpec] = []
    last: tuple[str, Resources | None, Need] | None = None
    for d in _expanded(spec):
        if last is None or last[0] != d.driver or last[1] is not d.resources:
            asked = _merged(spec.resources, d.resources)
            key = (d.driver, *((k, _hashable(v)) for k, v in asked.items()))
            if key not in needs:
                needs[key] = _need(asked, d.driver, price)
            last = (d.driver, d.resources, needs[key])
        need = last[2]
        tasks.append(
            TaskSpec(
                task_id=f"{spec.name}-{d.index:06d}",
                index=d.index,
                name=d.name,
                driver=d.driver,
                input=d.input,
                need=need,
                timeout_s=spec.timeout,
                max_price=price,
                retries=spec.retries,
                priority=spec.priority,
            )
        )
    return tasks


def job_mtr(spec: JobSpec, now: float) -> float:
    """The money–time ratio the job's tasks are scored with. A deadline job that gives no
    MTR gets infinity (the fastest worker): its owner priced no trade of money for time, only
    a time to meet, and the budget still bounds what it pays. With both, the MTR scores among
    the workers expected to finish in time (mtr: 0 and a deadline: the cheapest that make
    it). `now` is where a policy that relaxes as the deadline nears would read the clock."""
    if spec.deadline is not None and "mtr" not in spec.model_fields_set:
        return math.inf
    return spec.mtr


def job_deadline(spec: JobSpec, submitted_at: float) -> float | None:
    """When the job must be done, in seconds since the epoch; None without a deadline. A
    deadline already past is the caller's to judge: the spec has no clock."""
    if spec.deadline is None:
        return None
    if isinstance(spec.deadline, datetime):
        return spec.deadline.timestamp()
    return submitted_at + spec.deadline


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


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":  # pydantic's mark for a mapping's key
            out += " (the key)"
        elif _PARAM.fullmatch(part):
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


def _fields_at(loc: Loc) -> list[str]:
    model: type[BaseModel] = JobSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _model_within(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _from_pydantic(err: Any) -> list[_Problem]:
    kind, loc = err["type"], tuple(err["loc"])
    if kind == "job_spec_problems":
        return list(err["ctx"]["problems"])
    shown = _MISSING if kind == "missing" else _shown(err["input"])
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
        reason = f"unknown field; known: {', '.join(_fields_at(loc[:-1]))}"
    if reason is None:
        reason = str(err["msg"]).replace("Input should be", "must be", 1)
    return [_Problem(loc, shown, reason)]


def _problems(spec: JobSpec) -> list[_Problem]:
    """What the fields' own checks cannot see: how fields combine, and every derived task."""
    found: list[_Problem] = []
    if spec.tasks is not None and (spec.template is not None or spec.matrix is not None):
        found.append(
            _Problem(
                ("template" if spec.template is not None else "matrix",),
                "(given)",
                "give either tasks (a list) or template with matrix, not both",
            )
        )
    elif spec.tasks is None and spec.template is None and spec.matrix is None:
        found.append(
            _Problem(("tasks",), _MISSING, "required: give tasks (a list) or template and matrix")
        )
    elif spec.tasks is None and spec.template is None:
        found.append(_Problem(("template",), _MISSING, "required with matrix: the task to fill"))
    elif spec.tasks is None and spec.matrix is None:
        found.append(
            _Problem(("matrix",), _MISSING, "required with template: parameters and their values")
        )
    if not found:
        found = _list_problems(spec) if spec.tasks is not None else _template_problems(spec)
    if not found:
        found = _task_problems(spec)
    return found


def _list_problems(spec: JobSpec) -> list[_Problem]:
    assert spec.tasks is not None
    if len(spec.tasks) > MAX_TASKS:
        reason = f"{len(spec.tasks):,} tasks, over the limit of {MAX_TASKS:,}: split the job"
        return [_Problem(("tasks",), f"({len(spec.tasks):,} items)", reason)]
    return []


def _template_problems(spec: JobSpec) -> list[_Problem]:
    assert spec.template is not None and spec.matrix is not None
    found: list[_Problem] = []
    matrix = spec.matrix
    if not matrix:
        reason = "empty: give at least one parameter and its values, like size: [1, 2]"
        return [_Problem(("matrix",), "{}", reason)]
    room = [MAX_INPUT_BYTES]
    for key, values in matrix.items():
        if _PARAM.fullmatch(key) is None:
            reason = "a parameter name is a letter or _ then letters, digits or _ (as in {name})"
            found.append(_Problem(("matrix", key), _shown(key), reason))
        if not values:
            found.append(_Problem(("matrix", key), "[]", "no values: give at least one"))
        for j, value in enumerate(values):
            found += _unplain(value, ("matrix", key, j), room)
    unplain = _unplain(spec.template.input, ("template", "input"), [MAX_INPUT_BYTES])
    found += unplain
    if not unplain:
        for loc, name in _placeholders(spec.template.input, ("template", "input")):
            if name not in matrix:
                reason = (
                    f"placeholder {{{name}}} names no matrix parameter; the matrix has "
                    f"{', '.join(matrix)} (write {{{{{name}}}}} for the text {{{name}}})"
                )
                found.append(_Problem(loc, "{" + name + "}", reason))
    count = math.prod(len(v) for v in matrix.values())
    if count > MAX_TASKS:
        sizes = " × ".join(f"{len(v)} {k}" for k, v in matrix.items())
        reason = f"makes {count:,} tasks ({sizes}), over the limit of {MAX_TASKS:,}: split the job"
        found.append(_Problem(("matrix",), _shown(matrix), reason))
    return found


def _task_problems(spec: JobSpec) -> list[_Problem]:
    """Every derived task's input, as its driver will see it; one problem per place."""
    found: list[_Problem] = []
    seen: set[tuple[Loc, str]] = set()
    total = 0
    for d in _expanded(spec, own_inputs=False):
        # A template and its values were checked before being filled; a list's inputs not yet.
        unplain = _unplain(d.input, d.loc, [MAX_INPUT_BYTES]) if spec.tasks is not None else []
        problems: list[tuple[Loc, str, str]] = []
        size = 0
        if unplain:
            found += unplain
        elif isinstance(d.input, _KeyClash):
            problems.append(((), "(keys)", str(d.input)))
        else:
            size = len(encode(d.input))
            problems += _driver_problems(d.driver, d.input, spec.timeout)
        total += size
        if size > MAX_INPUT_BYTES:
            reason = f"{size:,} bytes encoded, over the {MAX_INPUT_BYTES:,}-byte limit"
            problems.append(((), _shown(d.input), reason))
        for sub, shown, reason in problems:
            if (d.loc + sub, reason) not in seen:
                seen.add((d.loc + sub, reason))
                found.append(_Problem(d.loc + sub, shown, reason + d.origin))
        if total > MAX_JOB_INPUT_BYTES:
            reason = f"the inputs take over {MAX_JOB_INPUT_BYTES >> 20} MiB: split the job"
            found.append(_Problem(d.loc, f"(by task {d.index})", reason))
        if len(found) > MAX_PROBLEMS or total > MAX_JOB_INPUT_BYTES:
            break
    return found


def _expanded(spec: JobSpec, *, own_inputs: bool = True) -> Iterator[_Derived]:
    """The tasks in order; `own_inputs=False` lends a list's inputs instead of copying them."""
    if spec.tasks is not None:
        for i, item in enumerate(spec.tasks):
            yield _Derived(
                index=i,
                name=item.name if item.name is not None else str(i),
                driver=item.driver or spec.driver,
                resources=item.resources,
                input=_copy(item.input) if own_inputs else item.input,
                loc=("tasks", i, "input"),
                origin="",
            )
        return
    assert spec.template is not None and spec.matrix is not None
    template, keys = spec.template, list(spec.matrix)
    # Each value's text once, not once per task it appears in.
    columns = [[(v, _as_text(v)) for v in values] for values in spec.matrix.values()]
    for i, row in enumerate(itertools.product(*columns)):
        params = {k: value for k, (value, _) in zip(keys, row)}
        texts = {k: text for k, (_, text) in zip(keys, row)}
        name = ",".join(f"{k}={_name_part(text)}" for k, text in texts.items())
        try:
            filled = _fill(template.input, params, texts)
        except _KeyClash as e:
            filled = e  # only a spec being checked meets this: a checked spec has no clash
        yield _Derived(
            index=i,
            name=name,
            driver=template.driver or spec.driver,
            resources=template.resources,
            input=filled,
            loc=("template", "input"),
            origin=f" (in task {i}: {_short(name)})",
        )


def _merged(base: Resources, over: Resources | None) -> dict[str, Any]:
    """What a task asks for: the job's resources with the task's laid over them."""
    asked = {name: getattr(base, name) for name in base.model_fields_set}
    for name in over.model_fields_set if over is not None else ():
        value = getattr(over, name)
        if name == "labels" and value is not None and asked.get("labels") is not None:
            value = {**asked["labels"], **value}
        asked[name] = value
    return {name: value for name, value in asked.items() if value is not None}


def _hashable(value: Any) -> Hashable:
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def _need(asked: Mapping[str, Any], driver: str, max_price: float) -> Need:
    clauses: list[Clause] = []
    for name, field, op in _NEED_CLAUSES:
        if name in asked:
            value = asked[name]
            clauses.append(Clause(field, op, value if isinstance(value, str) else float(value)))
    for key, value in sorted(asked.get("labels", {}).items()):
        clauses.append(Clause(f"label.{key}", "=", value))
    clauses.append(Clause("driver", "=", driver))
    if math.isfinite(max_price):
        clauses.append(Clause("max_price", "<=", max_price))
    return Need(tuple(clauses))


def _unplain(value: Any, loc: Loc, room: list[int], depth: int = 0) -> list[_Problem]:
    """The first place where `value` is not plain JSON/msgpack data, if any. `room` counts
    nodes down: YAML aliases can make a small file into a structure too large to walk."""
    room[0] -= 1
    top = loc[: len(loc) - depth]  # for a problem of the whole: its path would not be read
    if room[0] < 0:
        return [_Problem(top, "(...)", f"too large: over {MAX_INPUT_BYTES:,} values")]
    if depth > _MAX_DEPTH:
        return [_Problem(top, "(...)", f"nested deeper than {_MAX_DEPTH} levels")]
    if value is None or isinstance(value, bool | str):
        return []
    if isinstance(value, int):
        if -(1 << 63) <= value < 1 << 64:
            return []
        return [_Problem(loc, _shown(value), "a whole number beyond 64 bits: write it as text")]
    if isinstance(value, float):
        if math.isfinite(value):
            return []
        return [_Problem(loc, _shown(value), "not a finite number (JSON has no inf or nan)")]
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _unplain(item, (*loc, i), room, depth + 1)
            if found:
                return found
        return []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return [_Problem(loc, _shown(key), "a key must be text: quote it")]
            found = _unplain(item, (*loc, key), room, depth + 1)
            if found:
                return found
        return []
    if isinstance(value, date):  # and datetime: YAML reads unquoted times as these
        return [_Problem(loc, _shown(value), "a date or time is not JSON: quote it")]
    if isinstance(value, bytes):
        return [_Problem(loc, _shown(value), "binary data is not JSON: use text, like base64")]
    return [_Problem(loc, _shown(value), f"a {type(value).__name__} is not JSON: use a list")]


def _driver_problems(driver: str, value: Any, timeout: float) -> list[tuple[Loc, str, str]]:
    """What the worker's driver would refuse in this input, found before the task is sent."""
    if driver == "sleep":
        return _sleep_problems(value, timeout)
    if driver == "command":
        return _command_problems(value)
    if driver == "http" and not isinstance(value, dict):
        reason = "the http driver takes a mapping: the JSON body it posts to the model's endpoint"
        return [((), _shown(value), reason)]
    return []


def _unknown(
    value: dict[str, Any], known: tuple[str, ...], driver: str
) -> list[tuple[Loc, str, str]]:
    reason = f"unknown field; the {driver} driver takes {', '.join(known)}"
    return [((k,), _shown(v), reason) for k, v in value.items() if k not in known]


def _sleep_problems(value: Any, timeout: float) -> list[tuple[Loc, str, str]]:
    if not isinstance(value, dict):
        return [((), _shown(value), "the sleep driver takes {seconds: N}")]
    found = _unknown(value, ("seconds",), "sleep")
    if "seconds" not in value:
        reason = f"required: how long to sleep, 0..{MAX_SLEEP_S:g} seconds"
        return [*found, (("seconds",), _MISSING, reason)]
    s = value["seconds"]
    if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s <= MAX_SLEEP_S:
        found.append((("seconds",), _shown(s), f"must be a number of seconds, 0..{MAX_SLEEP_S:g}"))
    elif s >= timeout:
        reason = f"not less than the timeout ({timeout:g}s), so every try times out: raise timeout"
        found.append((("seconds",), _shown(s), reason))
    return found


def _command_problems(value: Any) -> list[tuple[Loc, str, str]]:
    known = ("program", "args", "stdin")
    if not isinstance(value, dict):
        reason = "the command driver takes {program: NAME, args: [TEXT, ...], stdin: TEXT}"
        return [((), _shown(value), reason)]
    found = _unknown(value, known, "command")
    program = value.get("program")
    if program is None:
        found.append((("program",), _MISSING, "required: a program the worker allows, by name"))
    elif not isinstance(program, str) or not 0 < len(program) <= 128:
        reason = "must be the name of a program the worker allows ([drivers.command] allow)"
        found.append((("program",), _shown(program), reason))
    args = value.get("args", [])
    if not isinstance(args, list):
        found.append((("args",), _shown(args), "must be a list of text"))
    else:
        for i, arg in enumerate(args):
            if not isinstance(arg, str):
                # Likeliest cause: an argument that is exactly "{param}" over numbers.
                reason = 'must be text: quote it, or write it inside text ("--n={n}")'
                found.append((("args", i), _shown(arg), reason))
            elif "\0" in arg:
                found.append((("args", i), _shown(arg), "must not contain NUL characters"))
    if "stdin" in value and not isinstance(value["stdin"], str):
        found.append((("stdin",), _shown(value["stdin"]), "must be text"))
    return found


class _KeyClash(ValueError):
    def __init__(self, key: str, filled: str) -> None:
        super().__init__(f"the key {key!r} becomes {filled!r}, as another key of its mapping does")
        self.key = key


def _as_text(value: Any) -> str:
    """A matrix value as it reads inside text and in task names: JSON, but text bare."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _name_part(text: str) -> str:
    # A task's name is one short line in listings; its input keeps the whole value.
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _NAME_VALUE_CHARS else text[: _NAME_VALUE_CHARS - 3] + "..."


def _fill_text(text: str, texts: Mapping[str, str]) -> str:
    if "{" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: "{" + m[1] + "}" if m[1] is not None else texts[m[2]], text)


def _fill(value: Any, params: Mapping[str, Any], texts: Mapping[str, str]) -> Any:
    """A new copy of `value` with the placeholders replaced by the values or their texts."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole is not None and whole[2] is not None:
            return _copy(params[whole[2]])
        return _fill_text(value, texts)
    if isinstance(value, list):
        return [_fill(v, params, texts) for v in value]
    if isinstance(value, dict):
        filled: dict[str, Any] = {}
        for key, item in value.items():
            new_key = _fill_text(key, texts)
            if new_key in filled:
                raise _KeyClash(key, new_key)
            filled[new_key] = _fill(item, params, texts)
        return filled
    return value


def _copy(value: Any) -> Any:
    # Each task owns its input: whoever changes one must not change its siblings or the spec.
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _placeholders(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        for m in _PLACEHOLDER.finditer(value):
            if m[2] is not None:
                yield loc, m[2]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _placeholders(item, (*loc, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _placeholders(key, (*loc, key))
            yield from _placeholders(item, (*loc, key))
