"""The job spec's fields: durations as written and refused, and a spec frozen and checked
however it is built."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from p2psched.scheduler.job import JobSpec, JobSpecError, job_mtr, parse_job


@pytest.mark.parametrize(
    ("written", "seconds"),
    [(90, 90.0), (0.25, 0.25), ("90s", 90.0), ("5m", 300.0), ("2h", 7200.0), ("1h30m", 5400.0)]
    + [("500ms", 0.5), ("1d", 86400.0), ("1.5h", 5400.0)],
)
def test_durations(written: object, seconds: float) -> None:
    spec = parse_job({"name": "t", "timeout": written, "tasks": [{"input": 1}]})
    assert spec.timeout == seconds


@pytest.mark.parametrize("written", ["90", "5 minutes", "1x", "", 0, -3, "0s", True, "400d"])
def test_bad_durations_are_refused(written: object) -> None:
    with pytest.raises(JobSpecError, match=r"^<job>: timeout: .*: must "):
        parse_job({"name": "t", "timeout": written, "tasks": [{"input": 1}]})


def test_a_spec_is_frozen_and_checked_however_it_is_built() -> None:
    spec = parse_job({"name": "t", "tasks": [{"input": 1}]})
    with pytest.raises(ValidationError):
        spec.priority = 9
    both = JobSpec.model_validate({"name": "t", "mtr": 0, "deadline": 60, "tasks": [{"input": 1}]})
    assert job_mtr(both, now=0.0) == 0.0  # the cheapest that can finish by the deadline
