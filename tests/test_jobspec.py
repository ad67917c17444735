"""The job spec: what a valid job derives, and how each kind of bad job is refused."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from p2psched.resources.need import Clause, Need
from p2psched.resources.profile import Gpu, Profile
from p2psched.scheduler.job import (
    MAX_TASKS,
    JobSpec,
    JobSpecError,
    derive_tasks,
    job_deadline,
    job_mtr,
    load_job,
    parse_job,
)
from tests.harness.jobspec import EXAMPLES, job_file, refusal


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


def test_a_template_over_a_matrix_makes_one_task_per_combination_first_parameter_slowest() -> None:
    spec = parse_job(
        {
            "name": "sweep",
            "template": {
                "input": {
                    "prompt": "a {size} {colour} box, not {{colour}}",
                    "size": "{size}",  # the whole text: the value itself
                    "nested": [{"colour": "{colour}", "label-{colour}": ["x{size}"]}],
                    "fixed": 7,
                }
            },
            "matrix": {"size": [1, 2.5, [3, 4]], "colour": ["red", "blue"]},
        }
    )
    tasks = derive_tasks(spec)
    assert len(tasks) == 6
    assert [t.name for t in tasks] == [
        "size=1,colour=red",
        "size=1,colour=blue",
        "size=2.5,colour=red",
        "size=2.5,colour=blue",
        "size=[3,4],colour=red",
        "size=[3,4],colour=blue",
    ]
    assert [t.task_id for t in tasks][-1] == "sweep-000005"
    assert tasks[3].input == {
        "prompt": "a 2.5 blue box, not {colour}",
        "size": 2.5,
        "nested": [{"colour": "blue", "label-blue": ["x2.5"]}],
        "fixed": 7,
    }
    assert tasks[4].input["size"] == [3, 4]
    assert tasks[4].input["prompt"] == "a [3,4] red box, not {colour}"
    assert all(t.need == Need((Clause("driver", "=", "echo"),)) for t in tasks)
    # Every task owns its input: changing one changes neither its siblings nor the spec.
    tasks[4].input["size"].append(5)
    assert tasks[5].input["size"] == [3, 4]
    assert derive_tasks(spec)[4].input["size"] == [3, 4]


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads_and_derives_tasks(example: Path) -> None:
    spec = load_job(example)
    tasks = derive_tasks(spec)
    assert tasks
    assert len({t.task_id for t in tasks}) == len(tasks)
    assert all(t.driver in ("sleep", "echo", "command", "http") for t in tasks)
    assert all(Need.parse(str(t.need)) == t.need for t in tasks)  # a need travels as text


def test_hello_runs_on_any_worker_and_each_driver_has_an_example() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} >= {
        "hello.yaml",
        "sleep.yaml",
        "matrix.yaml",
        "llm.yaml",
    }
    hello = derive_tasks(load_job(EXAMPLES / "hello.yaml"))
    assert len(hello) == 6
    bare = Profile(cpu_model="any", cpu_cores=1, ram_gb=1.0, drivers=("echo",))
    assert all(t.driver == "echo" and t.need.matches(bare) for t in hello)
    for name, driver in [("sleep", "sleep"), ("matrix", "command"), ("llm", "http")]:
        assert {t.driver for t in derive_tasks(load_job(EXAMPLES / f"{name}.yaml"))} == {driver}


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


REFUSALS = {
    "a list, not a mapping": ("- name: x\n- tasks: []\n", "(document)", "a list, not a mapping"),
    "a scalar, not a mapping": ("hello\n", "(document)", "text, not a mapping"),
    "an empty file": ("", "(document)", "empty"),
    "an unknown top-level field": (
        "name: x\ntasks: [{input: 1}]\npriorty: 3\n",
        "priorty: 3",
        "unknown field; known: name, driver, resources, tasks, template",
    ),
    "an unknown field in resources": (
        "name: x\nresources: {cpu: 2}\ntasks: [{input: 1}]\n",
        "resources.cpu: 2",
        "unknown field; known: cpus, ram_gb, gpu, gpus, vram_gb, model, labels",
    ),
    "an unknown field in a task's resources": (
        "name: x\ntasks: [{input: 1, resources: {vram: 8}}]\n",
        "tasks[0].resources.vram: 8",
        "unknown field; known: cpus",
    ),
    "a negative price": (
        "name: x\nbudget: {max_price_per_task: -0.5}\ntasks: [{input: 1}]\n",
        "budget.max_price_per_task: -0.5",
        "must be a number >= 0",
    ),
    "an empty matrix": (
        "name: x\ntemplate: {input: hi}\nmatrix: {}\n",
        "matrix: {}",
        "empty: give at least one parameter",
    ),
    "a parameter without values": (
        "name: x\ntemplate: {input: '{size}'}\nmatrix: {size: []}\n",
        "matrix.size: []",
        "no values",
    ),
    "an unknown placeholder": (
        "name: x\ntemplate: {input: {text: 'a {colour} box'}}\nmatrix: {size: [1]}\n",
        "template.input.text: {colour}",
        "placeholder {colour} names no matrix parameter; the matrix has size",
    ),
    "an unknown driver": (
        "name: x\ndriver: shell\ntasks: [{input: 1}]\n",
        "driver: 'shell'",
        "unknown driver; known: sleep, echo, command, http",
    ),
    "an unknown driver on a task": (
        "name: x\ntasks: [{input: 1}, {input: 1, driver: ssh}]\n",
        "tasks[1].driver: 'ssh'",
        "unknown driver; known: sleep, echo, command, http",
    ),
    "a sleep without seconds": (
        "name: x\ndriver: sleep\ntasks: [{input: {second: 3}}]\n",
        "tasks[0].input.seconds: (missing)",
        "required: how long to sleep",
    ),
    "a misspelt sleep field": (
        "name: x\ndriver: sleep\ntasks: [{input: {second: 3}}]\n",
        "tasks[0].input.second: 3",
        "unknown field; the sleep driver takes seconds",
    ),
    "a templated sleep out of range": (
        "name: x\ndriver: sleep\ntemplate: {input: {seconds: '{s}'}}\nmatrix: {s: [1, -2]}\n",
        "template.input.seconds: -2",
        "must be a number of seconds, 0..86400 (in task 1: s=-2)",
    ),
    "a command argument that is a number": (
        "name: x\ndriver: command\ntasks: [{input: {program: wc, args: [-l, 5]}}]\n",
        "tasks[0].input.args[1]: 5",
        "must be text",
    ),
    "a bad duration": (
        "name: x\ntimeout: 5 minutes\ntasks: [{input: 1}]\n",
        "timeout: '5 minutes'",
        'must be seconds (a number) or a duration like "90s", "5m", "1h30m", "500ms"',
    ),
    "a deadline without a zone": (
        "name: x\ndeadline: '2030-06-01T18:00:00'\ntasks: [{input: 1}]\n",
        "deadline: '2030-06-01T18:00:00'",
        "has no time zone",
    ),
    "too many tasks": (
        f"name: x\ntemplate: {{input: '{{a}}{{b}}'}}\nmatrix: {{a: {list(range(1000))}, "
        f"b: {list(range(101))}}}\n",
        "matrix: ",
        "makes 101,000 tasks (1000 a × 101 b), over the limit of 100,000",
    ),
    "both tasks and a template": (
        "name: x\ntasks: [{input: 1}]\ntemplate: {input: 1}\nmatrix: {a: [1]}\n",
        "template: (given)",
        "give either tasks (a list) or template with matrix, not both",
    ),
    "neither tasks nor a template": ("name: x\n", "tasks: (missing)", "required: give tasks"),
    "a bare GPU number": (
        "name: x\nresources: {gpu: '4090'}\ntasks: [{input: 1}]\n",
        "resources.gpu: '4090'",
        "write the model with its series, like 'RTX 4090'",
    ),
    "a time that is not JSON": (
        "name: x\ntasks: [{input: {at: 2030-06-01}}]\n",
        "tasks[0].input.at: datetime.date(2030, 6, 1)",
        "a date or time is not JSON: quote it",
    ),
    "a job name that is not a directory name": (
        "name: 'my job/1'\ntasks: [{input: 1}]\n",
        "name: 'my job/1'",
        "must be 1..64 characters of A-Z a-z 0-9 . _ -",
    ),
}


@pytest.mark.parametrize(("text", "where", "reason"), REFUSALS.values(), ids=REFUSALS.keys())
def test_a_bad_job_is_refused_naming_file_field_value_and_reason(
    tmp_path: Path, text: str, where: str, reason: str
) -> None:
    said = [line.split(": ", 1)[1] for line in refusal(tmp_path, text)]
    matching = [s for s in said if s.startswith(where)]
    assert len(matching) == 1 and reason in matching[0], said


def test_a_yaml_syntax_error_is_refused_with_its_line_and_column(tmp_path: Path) -> None:
    (line,) = refusal(tmp_path, "name: x\ntasks:\n  - {input: [1, 2}\n")
    assert ": line 3, column 18: not valid YAML: " in line


def test_a_key_given_twice_is_refused_where_it_repeats(tmp_path: Path) -> None:
    (line,) = refusal(
        tmp_path, "name: x\nresources: {cpus: 2}\ntasks: [{input: 1}]\nresources: {}\n"
    )
    assert line.endswith(": line 4, column 1: refused: the key 'resources' is given twice")


def test_aliases_that_nest_a_value_in_itself_or_multiply_it_are_refused(tmp_path: Path) -> None:
    (line,) = refusal(tmp_path, "name: x\ntasks: [{input: &a [1, *a]}]\n")
    assert line.endswith(": line 2, column 17: refused: this contains an alias to itself")
    bomb = ["name: x", "tasks:", "  - {input: &a0 [lol, lol, lol, lol, lol, lol, lol, lol]}"]
    bomb += [f"  - {{input: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]}}" for i in range(1, 10)]
    (line,) = refusal(tmp_path, "\n".join(bomb) + "\n")
    assert ": line 10, column 13: refused: over 16,777,216 values with its aliases expanded" in line


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "name: x\ntasks:\n  - &first {input: 1, resources: {cpus: 2}}\n  - {<<: *first, input: 2}\n"
    )
    spec = load_job(job_file(tmp_path, text))
    assert [t.input for t in derive_tasks(spec)] == [1, 2]
    assert [str(t.need) for t in derive_tasks(spec)] == ["cpus>=2,driver=echo"] * 2


def test_every_problem_is_listed_one_a_line(tmp_path: Path) -> None:
    lines = refusal(
        tmp_path,
        "name: x\ndriver: ssh\npriority: 10\nretries: -1\nresources: {cpus: 0, disk: 9}\n"
        "tasks: [{input: 1}]\n",
    )
    said = [line.split(": ", 1)[1] for line in lines]
    assert [s.split(":")[0] for s in said] == [
        "driver",
        "resources.cpus",
        "resources.disk",
        "retries",
        "priority",
    ]


def test_a_long_value_is_cut_short_in_the_message(tmp_path: Path) -> None:
    (line,) = refusal(tmp_path, f"name: x\ndriver: {'z' * 500}\ntasks: [{{input: 1}}]\n")
    shown = line.split(": ")[2]
    assert len(shown) <= 60 and "..." in shown


def test_over_the_task_limit_a_list_is_refused_with_its_count() -> None:
    with pytest.raises(JobSpecError) as caught:
        parse_job({"name": "x", "tasks": [{"input": 0}] * (MAX_TASKS + 1)}, source="big.yaml")
    assert str(caught.value) == (
        "big.yaml: tasks: (100,001 items): 100,001 tasks, over the limit of 100,000: split the job"
    )


def test_a_missing_file_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(JobSpecError) as caught:
        load_job(path)
    assert str(caught.value) == (
        f"{path}: no such file; pass the path of a job file, like examples/hello.yaml"
    )
