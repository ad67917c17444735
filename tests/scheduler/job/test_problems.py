"""How each kind of bad job is refused: one line per problem, naming the file, the field,
the value (cut short) and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psched.scheduler.job import MAX_TASKS, JobSpecError, parse_job
from tests.harness.jobspec import refusal

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
    "a command with free arguments": (
        "name: x\ndriver: command\ntasks: [{input: {program: wc, args: [-l, 5]}}]\n",
        "tasks[0].input.args: ['-l', 5]",
        "free arguments are not taken: give the program's named parameters in params",
    ),
    "a command parameter that is a list": (
        "name: x\ndriver: command\ntasks: [{input: {program: wc, params: {n: [5]}}}]\n",
        "tasks[0].input.params.n: [5]",
        "must be text, a whole number, or true/false",
    ),
    "a command input file outside its scratch directory": (
        "name: x\ndriver: command\ntasks: [{input: {program: wc, files: {../x: a}}}]\n",
        "tasks[0].input.files: '../x'",
        "must be a file name inside the task's scratch directory",
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
