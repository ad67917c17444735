"""The check a result must pass before its task counts as done and its worker is paid.

Promises: `check_receipt` gives one reason for the first thing wrong, or None only when the
receipt is signed by the worker it names (alone, or in a batch whose root's signature is checked
once: `VerifiedRoots`, then hashes only), names this scheduler, job and task, agrees with
the result about success, hashes the output received, charges no more than was committed,
and the output is MessagePack within the size and nesting limits.
"""

from __future__ import annotations

from typing import Any

from p2psched.wire.codec import DecodeError, encode
from p2psched.wire.deal import (
    MAX_RESULT_DEPTH,
    Receipt,
    VerifiedRoots,
    depth_over,
    packed_hash,
)
from p2psched.wire.messages import Result, unpack


def check_receipt(
    m: Result,
    public_key: bytes,
    expected: tuple[bytes, str, str],
    *,
    committed: float,
    max_bytes: int,
    roots: VerifiedRoots | None = None,
) -> tuple[str | None, bytes, Any]:
    """What is wrong with this result and its receipt (None: nothing), the output as it came
    (for the record; empty when something is wrong), and its value. `expected`: (scheduler,
    job, task); `roots`: the worker's batch roots checked already."""
    r: Receipt = m.receipt
    task = expected[2]
    if (unsigned := r.problem(public_key, roots)) is not None:
        return f"receipt for {task} {unsigned}", b"", None
    if (r.scheduler, r.job, r.task) != expected:
        return f"receipt for {task} names another scheduler, job or task", b"", None
    if r.ok != (m.error is None):
        return f"receipt for {task} disagrees with the result about success", b"", None
    # A failed task's output is nothing, whatever came: its receipt hashes nothing. What came
    # is read where it lies in the message, and copied out only once it is worth keeping.
    came = memoryview(m.output if r.ok else encode(None))
    if len(came) > max_bytes:
        return f"result of {task} is over {max_bytes} bytes", b"", None
    try:
        output = unpack(m.output, max_bytes) if r.ok else None
    except DecodeError as e:
        return f"result of {task} is not valid MessagePack ({e})", b"", None
    problem = None
    if r.ok and depth_over(output, MAX_RESULT_DEPTH):
        problem = f"result of {task} nests deeper than {MAX_RESULT_DEPTH} levels"
    elif r.result_hash != packed_hash(came):
        problem = f"receipt for {task} does not hash the result sent"
    elif r.ok and r.price > committed:
        problem = f"receipt for {task} charges {r.price:g}, committed {committed:g}"
    return problem, bytes(came) if problem is None else b"", output
