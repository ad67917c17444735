"""Job files for the job spec's tests: the examples shipped with p2psched, a job written
to a file, and the lines a bad one is refused with."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psched.scheduler.job import JobSpecError, load_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def job_file(tmp_path: Path, text: str) -> Path:
    """`text` written as the job file job.yaml in `tmp_path`."""
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> list[str]:
    """The lines of the error a job file is refused with."""
    path = job_file(tmp_path, text)
    with pytest.raises(JobSpecError) as caught:
        load_job(path)
    lines = str(caught.value).splitlines()
    assert lines == list(caught.value.lines)
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return lines
