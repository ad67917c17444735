"""Templated tasks: one task per combination of the matrix, each with its own copy of the
template's input filled in."""

from __future__ import annotations

from p2psched.resources.need import Clause, Need
from p2psched.scheduler.job import derive_tasks, parse_job


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
