"""A task's lifecycle table: the moves it allows, the ones it refuses, its final states."""

from __future__ import annotations

import pytest

from p2psched.scheduler.lifecycle import IllegalTransition, TaskState

S = TaskState


def test_lifecycle_refuses_illegal_moves() -> None:
    assert S.QUEUED.to(S.NEGOTIATING) == S.NEGOTIATING
    for bad in [
        (S.COMPLETED, S.QUEUED),
        (S.QUEUED, S.COMPLETED),
        (S.ABORTED, S.RUNNING),
        (S.UNSCHEDULED, S.SENT),
        (S.FAILED, S.QUEUED),
        (S.DISPUTED, S.COMPLETED),
        (S.VERIFYING, S.QUEUED),
        (S.QUEUED, S.VERIFYING),
    ]:
        with pytest.raises(IllegalTransition, match=f"from {bad[0].value} to {bad[1].value}"):
            bad[0].to(bad[1])
    assert {s for s in S if s.final} == {S.COMPLETED, S.FAILED, S.ABORTED, S.TIMED_OUT, S.DISPUTED}
