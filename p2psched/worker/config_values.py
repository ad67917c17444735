"""Checks of single values in the worker's config file, each refusing in the operator's words,
and the strictness every table of the file shares. `config` renders a refusal with the place
in the file it came from.

Promises: a refusal is a pydantic error of type `REFUSED` whose context holds its reason (and
where below the value checked it lies); a `true` is never taken for a number.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

REFUSED = "worker_config"  # the pydantic error type of our own checks
# A table of the file: its values as written (strict: `true` is not 1), no unknown field.
TABLE = ConfigDict(frozen=True, strict=True, extra="forbid")


def refuse(reason: str, *at: str | int) -> PydanticCustomError:
    # The reason goes in as context, not as the template: a reason may quote braces. `at` is
    # where below the value checked the problem lies (an entry of a table, a model's field).
    return PydanticCustomError(REFUSED, "{reason}", {"reason": reason, "at": at})


def finite(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
        raise refuse(f"must be a finite number >= 0, not {v!r}")
    return float(v)


def seconds(most: float) -> BeforeValidator:
    """A length of time: more than 0 seconds, at most `most`."""

    def check(v: Any) -> float:
        s = finite(v)
        if not 0 < s <= most:
            raise refuse(f"must be more than 0 seconds and at most {most:g}, not {v!r}")
        return s

    return BeforeValidator(check)


def byte_cap(most: int, why: str) -> BeforeValidator:
    """A number of bytes, 1..`most` (`why`: what holds it to `most`)."""

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
            raise refuse(f"must be a whole number of bytes, 1..{most} ({why}), not {v!r}")
        return v

    return BeforeValidator(check)


def interval(v: Any) -> float:
    """How often something is sampled: 0.1..3600 seconds."""
    if not 0.1 <= finite(v) <= 3600:
        raise refuse(f"must be 0.1..3600 seconds, not {v!r}")
    return float(v)


def share(v: Any) -> float:
    """A fraction of capacity, 0..1."""
    if not finite(v) <= 1:
        raise refuse(f"must be a fraction of capacity, 0..1, not {v!r}")
    return float(v)
