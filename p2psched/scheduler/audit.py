"""A job's results re-checked offline from the node's store (`p2psched verify JOB`): every kept
result against its receipt, and for a task run in copies (its job's `verify:`), the copies'
results against each other by the job's compare rule, run here again.

Promises: nothing a column says is taken on trust that can be re-derived: each receipt is checked
against the key stored with it (its signature, the worker it names), against this node (the
scheduler it names), its job and task, and against the stored output (its hash); each result is
compared again (exact, json within the tolerance, or the job's compare command run here), so a
kept result must agree with the other copies paid for it and a disputed one must disagree with
it; and the ledger must count each completed copy's receipt as paid and each disputed one's as
disputed, not paid. Every problem names its task. Reads never write; a job still running is
checked as far as its tasks have settled.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from p2psched.identity import node_id_of
from p2psched.scheduler.compare import compare_results
from p2psched.scheduler.job import parse_job
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run.agreement import VerifyPolicy, copy_of, json_agree
from p2psched.store import Store, StoredTask
from p2psched.wire.codec import DecodeError, decode
from p2psched.wire.deal import packed_hash
from p2psched.wire.noise import MAX_FRAME

# A command run on two results: (whether they agree, "") or (None, why it could not tell).
CompareCommand = Callable[[tuple[str, ...], Any, Any], Awaitable[tuple[bool | None, str]]]
PAGE = 256  # results read from the store at a time
PAGE_BYTES = 64 << 20
FINAL = tuple(s.value for s in TaskState if s.final)


class AuditError(Exception):
    """The job cannot be checked at all (the store never had it); the message says why."""


@dataclass(slots=True)
class TaskAudit:
    """One task, its copies taken together: where it ended, the copy whose result is kept,
    how many copies' results agreed with it (the kept one included) and were disputed, and
    what was found wrong."""

    task: str
    state: str
    kept: str | None = None
    copies: int = 1
    agreed: int = 0
    disputed: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class JobAudit:
    job: str
    rule: str  # how its copies' results are compared, as its job.yaml says it
    tasks: list[TaskAudit]

    @property
    def problems(self) -> list[str]:
        return [p for t in self.tasks for p in t.problems]


@dataclass(slots=True)
class _Copy:
    stored: StoredTask
    packed: bytes | None = None  # its output as stored, when it has a result
    value: Any = None


async def audit_job(
    store: Store, job: str, *, compare: CompareCommand = compare_results
) -> JobAudit:
    """Every task of `job` re-checked from `store` (see the module's promises)."""
    spec = store.job_spec(job)
    if spec is None:
        raise AuditError(f"no job {job!r} in {store.path}")
    policy = VerifyPolicy.of(parse_job(spec, source=f"stored job {job}").verify)
    own = None if store.own_public_key is None else node_id_of(store.own_public_key)
    groups: dict[str, list[_Copy]] = {}
    for t in store.job_tasks(job):
        copy = copy_of(t.task)
        groups.setdefault(t.task if copy is None else copy[0], []).append(_Copy(t))
    copies = {c.stored.task: c for group in groups.values() for c in group}
    for stored in _results(store, job):
        if stored.task in copies:
            copies[stored.task].stored = stored
    paid = store.receipts_paid(job)
    audits = []
    for base, group in groups.items():
        audit = TaskAudit(base, group[0].stored.state, copies=len(group))
        for c in group:
            _check_result(store, job, own, c, audit.problems)
            _check_paid(c.stored, paid.get(c.stored.task, []), audit.problems)
        await _check_group(policy, _by_arrival(store, job, group), audit, compare)
        audits.append(audit)
    return JobAudit(job, _rule(policy), audits)


def _results(store: Store, job: str) -> list[StoredTask]:
    """Every settled task of `job` with its result, read a page at a time."""
    found: list[StoredTask] = []
    while page := store.settled_tasks(job, FINAL, len(found), PAGE, PAGE_BYTES, copies=True):
        found.extend(page)
    return found


def _check_result(store: Store, job: str, own: bytes | None, c: _Copy, problems: list[str]) -> None:
    """A copy that completed or was disputed has a result: its receipt and output, checked."""
    t = c.stored
    if t.state not in ("completed", "disputed"):
        return
    name = t.task
    if t.receipt is None or t.worker_public_key is None:
        problems.append(f"{name}: {t.state}, but the store has no result for it")
        return
    r = t.receipt
    if node_id_of(t.worker_public_key) != r.worker:
        problems.append(f"{name}: its receipt names a worker whose key is not the one stored")
    elif not r.verify(t.worker_public_key):
        problems.append(f"{name}: its receipt's signature does not verify")
    if own is not None and r.scheduler != own:
        problems.append(f"{name}: its receipt names another scheduler")
    if (r.job, r.task) != (job, name):
        problems.append(f"{name}: its receipt names another job or task ({r.job}, {r.task})")
    if not r.ok:
        problems.append(f"{name}: its receipt says the task failed")
    packed = t.output
    if t.output_file is not None:
        try:
            packed = (store.outputs / t.output_file).read_bytes()
        except OSError as e:
            problems.append(f"{name}: its output file cannot be read ({e.strerror or e})")
            return
    assert packed is not None
    if packed_hash(packed) != r.result_hash:
        where = f"file {store.outputs / t.output_file}" if t.output_file else "row"
        problems.append(
            f"{name}: its stored output (its {where}) is not what its receipt hashes: "
            "changed since it came"
        )
        return
    try:
        c.packed, c.value = packed, decode(packed, MAX_FRAME)
    except DecodeError as e:
        problems.append(f"{name}: its stored output does not decode ({e})")


def _by_arrival(store: Store, job: str, group: list[_Copy]) -> list[_Copy]:
    """A task's copies in the order their results came (as the run kept the first of those
    that agree), those with no result last, in their own order."""
    if sum(c.stored.state == "completed" for c in group) < 2:
        return group  # (the order matters only to tell which of several agreeing was kept)

    def came(c: _Copy) -> float:
        moves = store.transitions(job, c.stored.task)
        return next((m["at"] for m in moves if m["to"] == "verifying"), math.inf)

    return sorted(group, key=came)


def _check_paid(
    t: StoredTask, receipts: list[tuple[str | None, bool]], problems: list[str]
) -> None:
    """What the ledger says of a copy's receipt against what the copy became: a completed one
    is paid, a disputed one is on record as disputed and not paid."""
    if t.state == "completed" and not any(spent for _, spent in receipts):
        problems.append(f"{t.task}: completed, but the ledger counts no receipt for it as paid")
    elif t.state == "disputed" and any(spent for _, spent in receipts):
        problems.append(f"{t.task}: disputed, yet the ledger counts its receipt as paid")
    elif t.state == "disputed" and ("disputed", False) not in receipts:
        problems.append(f"{t.task}: disputed, but the ledger has no receipt for it marked so")


async def _check_group(
    policy: VerifyPolicy, group: list[_Copy], audit: TaskAudit, compare: CompareCommand
) -> None:
    """The copies of one task, in the order their results came: the first completed is kept;
    the other completed ones must agree with it (and be enough for its quorum), the disputed
    ones must not."""
    completed = [c for c in group if c.stored.state == "completed"]
    disputed = [c for c in group if c.stored.state == "disputed"]
    audit.agreed, audit.disputed = len(completed), len(disputed)
    if not completed:
        audit.state = _settled_state(group)
        if disputed:
            audit.problems.append(f"{audit.task}: results disputed, yet none kept")
        return
    audit.state = "completed"
    kept = completed[0]
    audit.kept = kept.stored.task
    # (A sampled result may stand unchecked, even with a check copy: when no other worker
    # could take that copy.)
    need = policy.quorum if policy.replicas > 1 else 1
    if len(completed) < need:
        audit.problems.append(
            f"{audit.task}: {len(completed)} result(s) paid for, {need} must agree to keep one"
        )
    for other, should in [(c, True) for c in completed[1:]] + [(c, False) for c in disputed]:
        if kept.packed is None or other.packed is None:
            continue  # (its own problem is already said)
        same, why = await _agree(policy, kept, other, compare)
        name = other.stored.task
        if same is None:
            audit.problems.append(f"{name}: cannot compare with {audit.kept}: {why}")
        elif same and not should:
            audit.problems.append(
                f"{name}: disputed, yet its result agrees with {audit.kept}'s by the job's rule"
            )
        elif should and not same:
            audit.problems.append(
                f"{name}: paid as agreeing with {audit.kept}, yet its result differs by the "
                "job's rule"
            )


def _settled_state(group: list[_Copy]) -> str:
    """A task none of whose results was kept: failed once every copy ended, else where its
    copy furthest along is."""
    states = [c.stored.state for c in group]
    if all(s in FINAL for s in states):
        first = states[0]
        return first if first not in ("disputed", "completed") else "failed"
    return next(s for s in states if s not in FINAL)


async def _agree(
    policy: VerifyPolicy, a: _Copy, b: _Copy, compare: CompareCommand
) -> tuple[bool | None, str]:
    assert a.packed is not None and b.packed is not None
    if a.packed == b.packed:
        return True, ""
    if policy.compare == "json":
        return json_agree(a.value, b.value, policy.tolerance), ""
    if policy.compare == "command":
        assert policy.command is not None
        return await compare(policy.command, a.value, b.value)
    return False, ""


def _rule(policy: VerifyPolicy) -> str:
    if not policy.copies:
        return "none (each task ran once)"
    how = (
        f"{policy.replicas} replicas, {policy.quorum} must agree"
        if policy.replicas > 1
        else f"a sample of {policy.sample:g} checked by a second worker"
    )
    if policy.compare == "json":
        return f"{how}; compare json within {policy.tolerance:g}"
    if policy.compare == "command":
        assert policy.command is not None
        return f"{how}; compare by {' '.join(policy.command)}"
    return f"{how}; compare exact"
