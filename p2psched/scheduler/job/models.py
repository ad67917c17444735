"""The job spec as pydantic models: each field with its own check, and `JobSpec`'s last check
(`checks.job_problems`) over how the fields combine and every task they derive.

Promises: a `JobSpec` exists only checked, however it is built (`parse_job`, or
`JobSpec.model_validate`), and is frozen; a field's refusal says what it must be, and the fix.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from p2psched.resources.driver_inputs import KNOWN_DRIVERS
from p2psched.resources.profile import gpu_family
from p2psched.scheduler.estimate import MAX_TOKENS
from p2psched.scheduler.job.checks import job_problems
from p2psched.scheduler.job.problems import refuse, refuse_all
from p2psched.wire.messages import DEFAULT_PRIORITY, MAX_PRIORITY

DEFAULT_MTR = 0.001  # money per second of waiting, when a job gives neither mtr nor deadline
MAX_DURATION_S = 365 * 86_400.0

_JOB_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL_KEY = re.compile(r"[a-z_][a-z0-9_.]{0,31}")  # what Need.parse reads as label.KEY
_DURATION = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_INF_WORDS = ("inf", "infinity", ".inf")


def _job_name(v: str) -> str:
    if _JOB_NAME.fullmatch(v) is None or set(v) == {"."}:
        raise refuse(
            "must be 1..64 characters of A-Z a-z 0-9 . _ - and not only dots "
            "(it names the directory results/<job>/)"
        )
    return v


def _driver(v: str) -> str:
    if v not in KNOWN_DRIVERS:
        raise refuse(f"unknown driver; known: {', '.join(KNOWN_DRIVERS)}")
    return v


def _need_text(v: str) -> str:
    # The need is shown and sent as text "gpu=A100,model=..."; this keeps it readable back.
    if not 0 < len(v) <= 128 or v != v.strip() or "," in v or not v.isprintable():
        raise refuse("must be 1..128 printable characters, without commas or outer spaces")
    return v


def _gpu_name(v: str) -> str:
    family = gpu_family(v)
    if family.isdigit():
        # Workers report "RTX4090" for an "NVIDIA GeForce RTX 4090": a bare number never matches.
        raise refuse(f"names no GPU family; write the model with its series, like 'RTX {v}'")
    return v


def _label_key(v: str) -> str:
    if _LABEL_KEY.fullmatch(v) is None:
        raise refuse("a label name is 1..32 of a-z 0-9 _ . starting with a letter or _")
    return v


def _task_name(v: str) -> str:
    if not 0 < len(v) <= 128 or not v.isprintable():
        raise refuse("must be 1..128 printable characters")
    return v


def _amount(inf_means: str) -> BeforeValidator:
    def check(v: Any) -> float:
        if isinstance(v, str) and v.strip().lower() in _INF_WORDS:
            return math.inf
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
            raise refuse(f'must be a number >= 0, or "inf" for {inf_means}')
        return float(v)

    return BeforeValidator(check)


def _duration(v: Any) -> float:
    """Seconds from a number of seconds or a text like "90s", "5m", "1h30m", "500ms", "2d"."""
    if isinstance(v, str) and _DURATION.fullmatch(v):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(v))
    elif isinstance(v, int | float) and not isinstance(v, bool):
        seconds = float(v)
    else:
        raise refuse('must be seconds (a number) or a duration like "90s", "5m", "1h30m", "500ms"')
    if not 0 < seconds <= MAX_DURATION_S:
        raise refuse("must be more than 0 and at most 365 days")
    return seconds


def _deadline(v: Any) -> float | datetime | None:
    """Seconds after submission (float) or an absolute, time-zoned datetime."""
    if v is None:
        return None
    if isinstance(v, str) and not _DURATION.fullmatch(v):
        try:
            v = datetime.fromisoformat(v.strip())
        except ValueError:
            raise refuse(
                'must be a duration from submission ("2h") or an ISO 8601 time with a zone '
                '("2030-06-01T18:00:00+02:00")'
            ) from None
    if isinstance(v, datetime):
        if v.tzinfo is None or v.utcoffset() is None:
            raise refuse("has no time zone: add Z (UTC) or an offset like +02:00")
        return v
    if isinstance(v, date):  # YAML reads an unquoted 2030-06-01 as a date
        raise refuse('a date is not a time: write "2030-06-01T18:00:00Z"')
    return _duration(v)


_Driver = Annotated[str, AfterValidator(_driver)]
_NeedText = Annotated[str, AfterValidator(_need_text)]
_GpuName = Annotated[str, AfterValidator(_need_text), AfterValidator(_gpu_name)]
_LabelKey = Annotated[str, AfterValidator(_label_key)]
_TaskName = Annotated[str, AfterValidator(_task_name)]
_Duration = Annotated[float, BeforeValidator(_duration)]
DEFAULT_WAIT_FOR_WORKER_S = 30.0
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


class Metadata(BaseModel):
    """What a task tells the predictor of itself (the design documents' `metadata`): with
    both token counts, its run time is predicted from them. `hardware` is taken and not used
    (the worker the scheduler picks has its own)."""

    model_config = _STRICT

    input_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    output_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    hardware: str | None = Field(default=None, max_length=64)


class TaskItem(BaseModel):
    model_config = _STRICT

    input: Any
    name: _TaskName | None = None
    driver: _Driver | None = None
    resources: Resources | None = None
    metadata: Metadata | None = None


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


MAX_REPLICAS = 9
MAX_COMPARE_ARGS = 64


class Verify(BaseModel):
    """How a job's results are checked before one is kept and paid for: each task run on
    `replicas` different workers, kept once `quorum` results agree; or (`sample`) a second
    worker re-running a fraction of the tasks, more of a new or suspected worker's. `compare`
    says when two results agree: `exact` (their hashes), `json` (numbers within `tolerance`),
    or `command`, a program the scheduler runs on the two results (exit 0: they agree).
    `challenge`: a worker proves the capacity its ad claims before it gets a task."""

    model_config = _STRICT

    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    quorum: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)  # default: a majority
    sample: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    compare: Literal["exact", "json", "command"] = "exact"
    tolerance: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    command: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        default=None, min_length=1, max_length=MAX_COMPARE_ARGS
    )
    challenge: bool = False

    @model_validator(mode="after")
    def _together(self) -> Verify:
        if self.quorum is not None and self.quorum > self.replicas and self.sample == 0:
            raise refuse(
                f"quorum {self.quorum} is more than replicas {self.replicas}: at most as many "
                "results can agree as there are copies"
            )
        if self.replicas > 1 and self.quorum == 1:
            raise refuse(
                f"quorum 1 with replicas {self.replicas} keeps whichever result comes first, "
                "checking nothing: give quorum 2 or more"
            )
        if self.sample > 0 and self.replicas > 1:
            raise refuse(
                "give replicas (every task on several workers) or sample (a fraction re-run), "
                "not both"
            )
        if self.sample > 0 and self.quorum not in (None, 2):
            raise refuse("with sample, a result and its one check must agree: quorum is 2")
        if self.tolerance is not None and self.compare != "json":
            raise refuse("tolerance is for compare: json (numbers within it agree)")
        if (self.command is None) != (self.compare != "command"):
            raise refuse(
                "compare: command needs command (the program and its arguments, a list)"
                if self.command is None
                else "command is for compare: command"
            )
        if self.compare != "exact" and self.replicas == 1 and self.sample == 0:
            raise refuse(
                f"compare: {self.compare} compares a task's copies: give replicas (2 or more) "
                "or sample, or there is nothing to compare"
            )
        return self

    @property
    def agreeing(self) -> int:
        """How many results must agree for one to be kept."""
        if self.sample > 0:
            return 2
        return self.quorum if self.quorum is not None else self.replicas // 2 + 1


class JobSpec(BaseModel):
    """A checked job. The file, with every field but name and the tasks optional:

        name: resize                # 1..64 of [A-Za-z0-9._-]; results go to results/<name>/
        driver: echo                # sleep | echo | command | http; a task may name another
        resources: {cpus: 2, ram_gb: 4, gpu: A100, gpus: 1, vram_gb: 40, model: llama-3-8b,
                    labels: {region: eu}}
        tasks:                      # either a list ...
          - {name: first, input: {seconds: 1}, driver: sleep, resources: {cpus: 4}}
          - {input: {prompt: hi}, metadata: {input_tokens: 2, output_tokens: 64}}
        template: {input: {text: "size {size}", size: "{size}"}}   # ... or a template
        matrix: {size: [1, 2, 3]}   # over the cartesian product, the first parameter slowest
        budget: {max_price_per_task: 0.02, total: 5}   # default: no limit
        mtr: 0.001                  # money one second of waiting is worth (the default);
                                    # 0: only the cheapest worker; inf: the fastest
        deadline: 2h                # or "2030-06-01T18:00:00Z"; with mtr: the workers
                                    # expected to finish in time, scored by it
        retries: 2
        timeout: 10m                # per try of a task
        wait_for_worker: 30s        # a task no worker can take this long fails, saying why
        priority: 5                 # 0..9, 9 most urgent
        verify: {replicas: 2, quorum: 2, compare: exact}   # or {sample: 0.1}; see `Verify`

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
    # Long enough for a worker to (re)join and be found: a task fails only once no worker
    # could take it this long (workers all busy is not that: a busy worker is a candidate).
    wait_for_worker: _Duration = DEFAULT_WAIT_FOR_WORKER_S
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=MAX_PRIORITY)
    verify: Verify = Verify()

    @model_validator(mode="after")
    def _whole_job(self) -> JobSpec:
        problems = job_problems(self)
        if problems:
            raise refuse_all(problems)
        return self
