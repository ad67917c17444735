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


@pytest.mark.parametrize(
    ("verify", "error"),
    [
        ({"compare": "json"}, "compare: json compares a task's copies: give replicas"),
        ({"compare": "json", "tolerance": 0.1}, "compare: json compares a task's copies"),
        ({"compare": "command", "command": ["judge"]}, "compare: command compares a task's"),
        ({"replicas": 2, "quorum": 3}, "quorum 3 is more than replicas 2"),
        ({"replicas": 2, "sample": 0.1}, "give replicas .* or sample .*, not both"),
        ({"sample": 0.1, "quorum": 3}, "with sample, a result and its one check must agree"),
        ({"replicas": 2, "compare": "exact", "tolerance": 0.1}, "tolerance is for compare: json"),
        ({"replicas": 2, "command": ["judge"]}, "command is for compare: command"),
        ({"replicas": 2, "compare": "command"}, "compare: command needs command"),
    ],
)
def test_a_verify_that_cannot_do_what_it_says_is_refused(verify: object, error: str) -> None:
    with pytest.raises(JobSpecError, match=rf"^<job>: verify: .*: {error}"):
        parse_job({"name": "t", "verify": verify, "tasks": [{"input": 1}]})


def test_a_verify_that_compares_copies_is_taken() -> None:
    for verify in (
        {"replicas": 2, "compare": "json", "tolerance": 0.1},
        {"sample": 0.1, "compare": "command", "command": ["judge"]},
        {"challenge": True},
        {},
    ):
        parse_job({"name": "t", "verify": verify, "tasks": [{"input": 1}]})
