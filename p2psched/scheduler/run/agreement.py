"""What verifying a job's results rests on, without the run around it: the job's policy
(`VerifyPolicy`), a task's group of copies (`Group`), when two results agree (`json_agree`),
and how often a worker's result is checked when the job samples (`sample_rate`).

Promises: `sample_rate` is 1 for a worker with a dispute on record and for one never checked,
falls as its clean record grows, and never below the job's `sample`; `json_agree` is exact on
everything but numbers, which agree within `tolerance` (absolute or relative, whichever is
larger), and never on NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2psched.scheduler.job.models import Verify

# Sampling: how suspect a worker is, as the chance it still lies after `clean` of its results
# agreed with another worker's: SUSPECT_GAIN × SUSPECT_DECAY ** clean, capped at 1: every
# result of its first 3, a fifth of them after 10, the job's `sample` after 13. A worker that
# lies on 30 % of its tasks gets 10 results past a check with a chance of 0.7 ** 10, 3 %.
# Tuned on bench/verify.py (1,000 tasks, 20 workers, 2 liars) and the property test: 11 / 0.7
# cost 22.7-24.9 % extra work, 2 / 0.8 20.9-23.7 % with every liar caught sooner (within 29
# of its results on 200 seeds, against 38); cheaper settings let some liar go uncaught.
SUSPECT_GAIN = 2.0
SUSPECT_DECAY = 0.8
COPY_MARK = "~"  # "<task id>~2", "<task id>~3", ...: a task's copies are tasks too


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    """A job's `verify:` as its run applies it. `quorum`: results that must agree (with
    `sample`, the result and its check: 2)."""

    replicas: int = 1
    quorum: int = 1
    sample: float = 0.0
    compare: str = "exact"  # "exact" | "json" | "command"
    tolerance: float = 0.0
    command: tuple[str, ...] | None = None
    challenge: bool = False  # a worker's capacity is proved before it gets a task

    @classmethod
    def of(cls, v: Verify) -> VerifyPolicy:
        return cls(
            replicas=v.replicas,
            quorum=v.agreeing,
            sample=v.sample,
            compare=v.compare,
            tolerance=v.tolerance or 0.0,
            command=tuple(v.command) if v.command is not None else None,
            challenge=v.challenge,
        )

    @property
    def copies(self) -> bool:
        """Whether tasks run in copies at all (replicated, or sampled)."""
        return self.replicas > 1 or self.sample > 0


@dataclass(slots=True)
class Group:
    """One task and its copies: which results agree, and what was decided.

    `need`: results that must agree for one to be kept (1 for a sampled task not chosen for a
    check: its one result is kept as it comes). `clusters`: the copies with results, by
    agreement, each in the order its results came. `unplaced`: results not yet compared with
    every cluster (a compare command is asked one pair at a time: `probe` is the cluster the
    first is being compared with, `asking` whether that answer is awaited)."""

    base: str
    need: int
    max_copies: int
    copies: list[str] = field(default_factory=list)
    clusters: list[list[str]] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    probe: int = 0
    asking: bool = False
    decided: bool = False
    kept: str | None = None  # the copy whose result the job keeps
    checked: bool = False  # sampled for a check (or replicated): its result was compared
    no_quorum: bool = False  # it failed because its results never agreed enough


def copy_id(base: str, k: int) -> str:
    """The id of a task's `k`-th copy (k >= 2; the task itself is the first)."""
    return f"{base}{COPY_MARK}{k}"


def copy_of(task_id: str) -> tuple[str, int] | None:
    """(the task, k) of its `k`-th copy's id; None for an id that names no copy."""
    base, mark, nth = task_id.rpartition(COPY_MARK)
    return (base, int(nth)) if mark and nth.isdigit() else None


def sample_rate(sample: float, clean: int, disputes: int) -> float:
    """The chance a result of a worker with this record is checked by a second worker."""
    if sample <= 0:
        return 0.0
    if disputes:
        return 1.0
    return min(1.0, max(sample, SUSPECT_GAIN * SUSPECT_DECAY**clean))


def json_agree(a: Any, b: Any, tolerance: float) -> bool:
    """Whether two results are the same JSON value, numbers within `tolerance`."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                return False
        elif isinstance(x, int | float) and isinstance(y, int | float):
            if not _near(float(x), float(y), tolerance):
                return False
        elif isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list | tuple) and isinstance(y, list | tuple):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _near(x: float, y: float, tolerance: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return False
    if x == y:
        return True
    return abs(x - y) <= max(tolerance, tolerance * max(abs(x), abs(y)))
