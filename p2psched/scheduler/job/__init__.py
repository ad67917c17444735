"""The job spec (job.yaml): reading and checking a job, and deriving its tasks and their needs.

`load_job(path)` (`read_job`, then `parse_job`) or `parse_job(doc)` gives a checked `JobSpec`,
or raises `JobSpecError`: one line per problem with the file, the field path, the value and the
reason, before anything is sent. `derive_tasks(spec)` gives its tasks (at most MAX_TASKS, each
input plain JSON data its driver takes). Inside: `loader` reads files, `models` holds the fields
and their checks, `checks` what only the whole job shows, `templates` fills a template from its
matrix, `derive` makes the tasks, and `problems` words what is wrong.
"""

from __future__ import annotations

from p2psched.scheduler.job.checks import MAX_TASKS as MAX_TASKS
from p2psched.scheduler.job.derive import TaskSpec as TaskSpec
from p2psched.scheduler.job.derive import derive_tasks as derive_tasks
from p2psched.scheduler.job.derive import job_deadline as job_deadline
from p2psched.scheduler.job.derive import job_mtr as job_mtr
from p2psched.scheduler.job.loader import collector_paused as collector_paused
from p2psched.scheduler.job.loader import load_job as load_job
from p2psched.scheduler.job.loader import parse_job as parse_job
from p2psched.scheduler.job.loader import read_job as read_job
from p2psched.scheduler.job.models import Budget as Budget
from p2psched.scheduler.job.models import JobSpec as JobSpec
from p2psched.scheduler.job.models import Resources as Resources
from p2psched.scheduler.job.problems import JobSpecError as JobSpecError

__all__ = [
    "MAX_TASKS",
    "Budget",
    "JobSpec",
    "JobSpecError",
    "Resources",
    "TaskSpec",
    "collector_paused",
    "derive_tasks",
    "job_deadline",
    "job_mtr",
    "load_job",
    "parse_job",
    "read_job",
]
