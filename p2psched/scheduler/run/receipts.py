"""The check a result must pass before its task counts as done and its worker is paid.

Promises: `check_receipt` gives one reason for the first thing wrong, or None only when the
receipt is signed by the worker it names, names this scheduler, job and task, agrees with
the result about success, hashes the output received, charges no more than was committed,
and the output is within the size and nesting limits.
"""

from __future__ import annotations

from typing import Any

from p2psched.wire.codec import encode
from p2psched.wire.deal import MAX_RESULT_DEPTH, Receipt, depth_over, packed_hash


def check_receipt(
    r: Receipt,
    public_key: bytes,
    expected: tuple[bytes, str, str],
    *,
    output: Any,
    error: str | None,
    committed: float,
    max_bytes: int,
) -> tuple[str | None, bytes]:
    """What is wrong with this result and its receipt (None: nothing), and the output encoded
    (once: for its size, its hash and the record). `expected`: (scheduler, job, task)."""
    task = expected[2]
    if not r.verify(public_key):
        return f"receipt for {task} is not signed by the worker", b""
    if (r.scheduler, r.job, r.task) != expected:
        return f"receipt for {task} names another scheduler, job or task", b""
    if r.ok != (error is None):
        return f"receipt for {task} disagrees with the result about success", b""
    packed = encode(output if r.ok else None)
    problem = None
    if len(packed) > max_bytes:
        problem = f"result of {task} is over {max_bytes} bytes"
    elif r.ok and depth_over(output, MAX_RESULT_DEPTH):
        problem = f"result of {task} nests deeper than {MAX_RESULT_DEPTH} levels"
    elif r.result_hash != packed_hash(packed):
        problem = f"receipt for {task} does not hash the result sent"
    elif r.ok and r.price > committed:
        problem = f"receipt for {task} charges {r.price:g}, committed {committed:g}"
    return problem, packed
