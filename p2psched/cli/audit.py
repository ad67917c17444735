"""`p2psched verify JOB`: a job's results re-checked from the node's store
(p2psched/scheduler/audit.py), shown as a table of its tasks and the problems found.

Promises: exit status 0 only when nothing is wrong; each problem is one line on stderr naming
its task; --json prints the whole check as one JSON document.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from p2psched.cli.args import UsageError
from p2psched.cli.show import print_table


def run_verify(path: Path, job: str, as_json: bool) -> int:
    """Check `job` in the store at `path`; the exit status."""
    import trio

    from p2psched.scheduler.audit import AuditError, audit_job
    from p2psched.store import Store

    with Store.open(path) as store:
        try:
            audit = trio.run(audit_job, store, job)
        except AuditError as e:
            raise UsageError(str(e)) from None
    problems = audit.problems
    if as_json:
        print(json.dumps({**asdict(audit), "problems": problems}))
        return 1 if problems else 0
    print(f"job {job}: copies checked by {audit.rule}")
    print_table(
        ("TASK", "STATE", "KEPT", "COPIES", "AGREED", "DISPUTED", "CHECK"),
        (
            (
                t.task,
                t.state,
                t.kept or "-",
                t.copies,
                t.agreed,
                t.disputed,
                f"{len(t.problems)} problem(s)" if t.problems else "ok",
            )
            for t in audit.tasks
        ),
        right={"COPIES", "AGREED", "DISPUTED"},
    )
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    kept = sum(t.kept is not None for t in audit.tasks)
    disputed = sum(t.disputed for t in audit.tasks)
    print(
        f"verified {len(audit.tasks)} task(s): {kept} result(s) kept, {disputed} disputed; "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0
