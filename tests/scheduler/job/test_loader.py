"""Reading a job file: the shipped examples, YAML's syntax errors, repeated keys, alias
bombs and merge keys, and a missing file."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.job import JobSpecError, derive_tasks, load_job
from tests.harness.jobspec import EXAMPLES, job_file, refusal


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


def test_a_missing_file_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(JobSpecError) as caught:
        load_job(path)
    assert str(caught.value) == (
        f"{path}: no such file; pass the path of a job file, like examples/hello.yaml"
    )
