"""`audit_job` (what `p2psched verify` runs) on a store written as a verifying run writes it:
copies compared again by the job's rule, json within its tolerance here, and each copy paid
against the kept one that should not be, or each disputed one that should have been (or that
the ledger counts as paid), named."""

from __future__ import annotations

from pathlib import Path

from p2psched.scheduler.audit import audit_job
from p2psched.store import Store
from p2psched.store.journal import Entry, JobOpened, Judged
from tests.harness.store import ME, OTHER_WORKER, WORKER, charged, moved

JOB = "j-1a2b3c4d"
SPEC = {
    "name": "j",
    "driver": "echo",
    "tasks": [{"input": i} for i in range(6)],
    "verify": {"replicas": 2, "quorum": 2, "compare": "json", "tolerance": 0.01},
}


async def test_copies_are_compared_again_by_the_jobs_rule(tmp_path: Path) -> None:
    entries: list[Entry] = [JobOpened(JOB, "j", SPEC, 1000.0, 60.0, 100.0, None)]
    tasks = [  # each task's copies, in the order their results came: value, verdict
        [({"x": 1.005}, "completed"), ({"x": 1.0}, "completed")],  # within the tolerance
        [({"x": 2.5}, "disputed"), ({"x": 2.0}, "completed"), ({"x": 2.0}, "completed")],
        [({"x": 3.001}, "disputed"), ({"x": 3.0}, "completed"), ({"x": 3.0}, "completed")],
        [({"x": 9.0}, "completed"), ({"x": 4.0}, "completed")],
        [(None, "failed"), ({"x": 5.0}, "completed")],
        [({"x": 6.5}, "disputed"), ({"x": 6.0}, "completed"), ({"x": 6.0}, "completed")],
    ]
    paid_anyway = f"{JOB}/5~2"  # its ledger entry says agreed: paid
    at = 1001.0
    for i, copies in enumerate(tasks):
        # The task itself is recorded first; its copy ~2 (another worker's) came first.
        order = [f"{JOB}/{i}", *(f"{JOB}/{i}~{k}" for k in range(2, len(copies) + 1))]
        came = [order[1], order[0], *order[2:]]
        entries += [moved(JOB, task, "unscheduled", "queued", 1000.0) for task in order]
        for task, (value, state) in zip(came, copies, strict=True):
            at += 1
            if state == "failed":
                entries.append(moved(JOB, task, "queued", "failed", at))
                continue
            worker = OTHER_WORKER if task == order[1] else WORKER
            verdict = "agreed" if state == "completed" or task == paid_anyway else state
            entries += [
                moved(JOB, task, "queued", "verifying", at),
                charged(JOB, task, 0.5, value, worker=worker, verdict="pending"),
                moved(JOB, task, "verifying", state, at + 100),
                Judged(JOB, task, verdict, at + 100),
            ]
    with Store.open(tmp_path / "state.db", ME.public_key) as store:
        store.write(entries)
        audit = await audit_job(store, JOB)
    assert audit.rule == "2 replicas, 2 must agree; compare json within 0.01"
    assert [(t.task, t.state, t.kept, t.copies, t.agreed, t.disputed) for t in audit.tasks] == [
        (f"{JOB}/0", "completed", f"{JOB}/0~2", 2, 2, 0),  # the first agreeing result to come
        (f"{JOB}/1", "completed", f"{JOB}/1", 3, 2, 1),
        (f"{JOB}/2", "completed", f"{JOB}/2", 3, 2, 1),
        (f"{JOB}/3", "completed", f"{JOB}/3~2", 2, 2, 0),
        (f"{JOB}/4", "completed", f"{JOB}/4", 2, 1, 0),
        (f"{JOB}/5", "completed", f"{JOB}/5", 3, 2, 1),
    ]
    assert audit.problems == [
        f"{JOB}/2~2: disputed, yet its result agrees with {JOB}/2's by the job's rule",
        f"{JOB}/3: paid as agreeing with {JOB}/3~2, yet its result differs by the job's rule",
        f"{JOB}/4: 1 result(s) paid for, 2 must agree to keep one",
        f"{JOB}/5~2: disputed, yet the ledger counts its receipt as paid",
    ]
