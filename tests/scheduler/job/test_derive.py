"""From a job to its tasks: each task with the job's defaults laid under its own, the need
a worker must meet, and the job's money-time ratio and deadline."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from p2psched.resources.need import Clause, Need
from p2psched.resources.profile import Gpu, Profile
from p2psched.scheduler.estimate import Tokens
from p2psched.scheduler.job import (
    JobSpecError,
    derive_tasks,
    job_deadline,
    job_mtr,
    load_job,
    parse_job,
)
from tests.harness.jobspec import EXAMPLES, job_file


def test_a_list_job_derives_its_tasks_with_the_job_defaults_laid_under_each(
    tmp_path: Path,
) -> None:
    spec = load_job(
        job_file(
            tmp_path,
            """
name: mixed
resources: {ram_gb: 8, gpu: A100, labels: {region: eu}}
budget: {max_price_per_task: 0.25}
timeout: 1h30m
tasks:
  - input: {text: hello}
  - name: nap
    driver: sleep
    input: {seconds: 2.5}
    resources: {cpus: 4, gpu: null, labels: {owner: ana}}
""",
        ),
    )
    # as a scheduler that took the job on as mixed-1 names them
    assert [t.task_id for t in derive_tasks(spec, "mixed-1")] == ["mixed-1/0", "mixed-1/1"]
    first, nap = derive_tasks(spec)
    assert (first.task_id, first.index, first.name, first.driver) == (
        "mixed-000000",
        0,
        "0",
        "echo",
    )
    assert first.input == {"text": "hello"}
    assert str(first.need) == "ram>=8,gpu=A100,label.region=eu,driver=echo,max_price<=0.25"
    assert (nap.task_id, nap.name, nap.driver, nap.input) == (
        "mixed-000001",
        "nap",
        "sleep",
        {"seconds": 2.5},
    )
    # The task's cpus added, its gpu: null dropped the job's, its labels merged key by key.
    assert nap.need == Need(
        (
            Clause("cpus", ">=", 4.0),
            Clause("ram", ">=", 8.0),
            Clause("label.owner", "=", "ana"),
            Clause("label.region", "=", "eu"),
            Clause("driver", "=", "sleep"),
            Clause("max_price", "<=", 0.25),
        )
    )
    assert Need.parse(str(nap.need)) == nap.need  # shown needs read back as the same need
    assert (nap.timeout_s, nap.max_price, nap.retries, nap.priority) == (5400.0, 0.25, 2, 5)
    assert (spec.mtr, spec.deadline, spec.budget.total) == (
        0.001,
        None,
        math.inf,
    )  # the default MTR


def test_the_derived_need_matches_exactly_the_workers_that_qualify() -> None:
    (task, *_) = derive_tasks(load_job(EXAMPLES / "llm.yaml"))
    worker = Profile(
        cpu_model="AMD EPYC 7763",
        cpu_cores=64,
        ram_gb=512.0,
        gpus=(Gpu("NVIDIA A100-SXM4-80GB", 80.0),),
        installed_models=("llama-3-8b",),
        drivers=("echo", "http"),
        labels=(("region", "eu"),),
        min_price=0.01,
    )
    assert task.need.matches(worker)
    assert task.need.matches(replace(worker, gpus=(Gpu("NVIDIA A100-SXM4-40GB", 40.0),)))
    for unfit in (
        replace(worker, gpus=(Gpu("NVIDIA GeForce RTX 4090", 24.0),)),
        replace(worker, gpus=(Gpu("NVIDIA A100-SXM4-40GB", 39.5),)),  # under vram_gb: 40
        replace(worker, installed_models=("mistral-7b",)),
        replace(worker, drivers=("echo",)),
        replace(worker, labels=(("region", "us"),)),
        replace(worker, min_price=0.05),  # over max_price_per_task
    ):
        assert not task.need.matches(unfit), unfit


@pytest.mark.parametrize("written", ["inf", "infinity", "Infinity", ".inf"])
def test_an_infinite_mtr_asks_for_the_fastest_worker(tmp_path: Path, written: str) -> None:
    spec = load_job(job_file(tmp_path, f"name: fast\nmtr: {written}\ntasks: [{{input: 1}}]\n"))
    assert spec.mtr == math.inf
    assert job_mtr(spec, now=0.0) == math.inf
    assert job_deadline(spec, submitted_at=100.0) is None


def test_a_deadline_is_absolute_or_from_submission_and_favours_speed() -> None:
    relative = parse_job({"name": "soon", "deadline": "1h30m", "tasks": [{"input": 1}]})
    assert job_deadline(relative, submitted_at=1000.0) == 1000.0 + 5400.0
    assert job_mtr(relative, now=1000.0) == math.inf
    absolute = parse_job(
        {"name": "then", "deadline": "2030-06-01T18:00:00+02:00", "tasks": [{"input": 1}]}
    )
    expected = datetime(2030, 6, 1, 16, 0, tzinfo=UTC).timestamp()
    assert job_deadline(absolute, submitted_at=0.0) == expected
    cheap = parse_job({"name": "cheap", "mtr": 0.5, "tasks": [{"input": 1}]})
    assert job_mtr(cheap, now=0.0) == 0.5


def test_a_task_tells_its_tokens_by_its_metadata_or_its_openai_request() -> None:
    spec = parse_job(
        {
            "name": "chat",
            "driver": "http",
            "resources": {"model": "llama-3-8b"},
            "tasks": [
                {
                    "input": {"prompt": "x" * 400},
                    "metadata": {"input_tokens": 7, "output_tokens": 9},
                },
                {"input": {"messages": [{"role": "user", "content": "y" * 41}], "max_tokens": 64}},
                {"input": {"prompt": "no limit asked"}},
                {
                    "input": {"prompt": "one count"},
                    "metadata": {"input_tokens": 5, "hardware": "A100"},
                },
                {"input": {"prompt": "z" * 8, "max_tokens": 3}, "driver": "echo"},
            ],
        }
    )
    told = [t.tokens for t in derive_tasks(spec)]
    assert told == [Tokens(7, 9), Tokens(11, 64), None, None, None]


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"input_tokens": -1, "output_tokens": 1}, "input_tokens"),
        ({"input_tokens": 1, "output_tokens": "many"}, "output_tokens"),
        ({"input_tokens": 1, "output_tokens": 1.5}, "output_tokens"),
        ({"input_tokens": 1, "output_tokens": 10**12}, "output_tokens"),
        ({"input_tokens": 1, "gpu": "A100"}, "gpu"),
    ],
)
def test_bad_metadata_is_refused_naming_its_field(metadata: dict[str, object], field: str) -> None:
    with pytest.raises(JobSpecError, match=rf"metadata\.{field}"):
        parse_job({"name": "j", "tasks": [{"input": {}, "metadata": metadata}]})
