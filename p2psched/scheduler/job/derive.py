"""From a checked job to its tasks: each with its driver, its own copy of its input, the need a
worker must meet and the job's limits; and the job's money–time ratio and deadline.

Promises: tasks come in the order they are written (a matrix's rows with its first parameter
slowest); tasks that ask for the same resources share one `Need`; deriving reads no clock.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from p2psched.resources.need import Clause, Need
from p2psched.scheduler.estimate import Tokens, request_tokens
from p2psched.scheduler.job.problems import Loc, short
from p2psched.scheduler.job.templates import KeyClash, as_text, copied, fill, name_part
from p2psched.wire.deal import task_id_for

if TYPE_CHECKING:
    from p2psched.scheduler.job.models import JobSpec, Metadata, Resources

# Resources field -> the Need clause it becomes, in the order a need is shown.
_NEED_CLAUSES = (
    ("cpus", "cpus", ">="),
    ("ram_gb", "ram", ">="),
    ("gpu", "gpu", "="),
    ("gpus", "gpus", ">="),
    ("vram_gb", "vram", ">="),
    ("model", "model", "="),
)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task of a job. `derive_tasks` names it `<job name>-<index:06d>`; for a scheduler that
    takes the job on, `task_id_for(job id, index)`, `<job id>/<index>`, the id its deals and its
    store know it by."""

    task_id: str
    index: int
    name: str  # the item's name (default: its index), or "k1=v1,k2=v2" (values cut at 40)
    driver: str
    input: Any  # plain JSON data, this task's own copy
    need: Need
    timeout_s: float
    max_price: float  # math.inf when unlimited
    retries: int
    priority: int
    tokens: Tokens | None = None  # for the predictor: its metadata's, else its request's


@dataclass(frozen=True, slots=True)
class DerivedTask:
    """A task as written or filled in, before its need is worked out."""

    index: int
    name: str
    driver: str
    resources: Resources | None  # laid over the job's
    input: Any  # a `KeyClash` for a template row whose keys clash (only while checking)
    loc: Loc  # where in the file this task's input was written
    origin: str  # for a problem found in a template's task: which task
    tokens: Tokens | None = None


def derive_tasks(spec: JobSpec, job_id: str | None = None) -> list[TaskSpec]:
    """The job's tasks in order, each with its driver, input, need and limits; named as a
    scheduler that took the job on as `job_id` names them, if given."""
    price = spec.budget.max_price_per_task
    needs: dict[Hashable, Need] = {}  # tasks that ask for the same share one Need
    tasks: list[TaskSpec] = []
    last: tuple[str, Resources | None, Need] | None = None
    for d in expanded(spec):
        if last is None or last[0] != d.driver or last[1] is not d.resources:
            asked = _merged(spec.resources, d.resources)
            key = (d.driver, *((k, _hashable(v)) for k, v in asked.items()))
            if key not in needs:
                needs[key] = _need(asked, d.driver, price)
            last = (d.driver, d.resources, needs[key])
        tasks.append(
            TaskSpec(
                task_id=(
                    f"{spec.name}-{d.index:06d}" if job_id is None else task_id_for(job_id, d.index)
                ),
                index=d.index,
                name=d.name,
                driver=d.driver,
                input=d.input,
                need=last[2],
                timeout_s=spec.timeout,
                max_price=price,
                retries=spec.retries,
                priority=spec.priority,
                # (an http task's input is an OpenAI request: it tells its tokens itself)
                tokens=d.tokens or (request_tokens(d.input) if d.driver == "http" else None),
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


def expanded(spec: JobSpec, *, own_inputs: bool = True) -> Iterator[DerivedTask]:
    """The tasks in order; `own_inputs=False` lends a list's inputs instead of copying them."""
    if spec.tasks is not None:
        for i, item in enumerate(spec.tasks):
            yield DerivedTask(
                index=i,
                name=item.name if item.name is not None else str(i),
                driver=item.driver or spec.driver,
                resources=item.resources,
                input=copied(item.input) if own_inputs else item.input,
                loc=("tasks", i, "input"),
                origin="",
                tokens=_tokens(item.metadata),
            )
        return
    assert spec.template is not None and spec.matrix is not None
    template, keys = spec.template, list(spec.matrix)
    # Each value's text once, not once per task it appears in.
    columns = [[(v, as_text(v)) for v in values] for values in spec.matrix.values()]
    for i, row in enumerate(itertools.product(*columns)):
        params = {k: value for k, (value, _) in zip(keys, row)}
        texts = {k: text for k, (_, text) in zip(keys, row)}
        name = ",".join(f"{k}={name_part(text)}" for k, text in texts.items())
        try:
            filled = fill(template.input, params, texts)
        except KeyClash as e:
            filled = e  # only a spec being checked meets this: a checked spec has no clash
        yield DerivedTask(
            index=i,
            name=name,
            driver=template.driver or spec.driver,
            resources=template.resources,
            input=filled,
            loc=("template", "input"),
            origin=f" (in task {i}: {short(name)})",
        )


def _tokens(metadata: Metadata | None) -> Tokens | None:
    """A task's token counts, if its metadata tells both (with one, a fit on both cannot use
    it: a missing count is not a count of 0)."""
    if metadata is None or metadata.input_tokens is None or metadata.output_tokens is None:
        return None
    return Tokens(metadata.input_tokens, metadata.output_tokens)


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
