"""A job's compare command as the scheduler runs it (`p2psched.scheduler.compare`, and the
dispatcher's shell of the `Compare` action): its verdicts and errors, the files it is given
and deleted, and how many run at once."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import trio

from p2psched.identity import Identity
from p2psched.scheduler.compare import COMPARES_AT_ONCE, compare_results
from p2psched.scheduler.run import Compare, JobRun, VerifyPolicy
from p2psched.scheduler.service import Dispatcher
from tests.harness.net import spec

SAME = "import json, sys; a, b = (json.load(open(p)) for p in sys.argv[1:]); sys.exit(a != b)"


async def test_its_verdicts_and_its_errors_never_taken_for_a_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    judge = (sys.executable, "-c", SAME)
    assert await compare_results(judge, {"x": [1, b"\x00"]}, {"x": [1, b"\x00"]}) == (True, "")
    assert await compare_results(judge, {"x": 1}, {"x": 2}) == (False, "")
    same, error = await compare_results(("no-such-judge-program",), 1, 1)
    assert same is None and "'no-such-judge-program' could not start" in error
    crash = (sys.executable, "-c", "import sys; sys.stderr.write('x' * 10**6 + 'END'); exit(3)")
    same, error = await compare_results(crash, 1, 1)
    assert same is None and "exited with 3" in error and error.endswith("END")
    assert len(error) < 1000  # the tail of what it said, not all of it
    same, error = await compare_results(
        (sys.executable, "-c", "import time; time.sleep(60)"), 1, 1, timeout_s=0.5
    )
    assert same is None and "did not answer within 0.5 s" in error
    assert not list(tmp_path.iterdir())  # files deleted


async def test_a_node_runs_a_few_compare_commands_at_once(tmp_path: Path) -> None:
    """A job of many tasks asks for a compare of each at once: they queue for a few places
    (each reads two results, up to a result's limit each, and starts a program)."""
    log = tmp_path / "log"
    counting = (
        "import os, sys, time; d = sys.argv[1]; f = os.path.join(d, str(os.getpid())); "
        "open(f, 'w').close(); n = len(os.listdir(d)); "
        f"open({str(log)!r}, 'a').write(f'{{n}}\\n'); time.sleep(0.3); os.remove(f)"
    )
    running = tmp_path / "running"
    running.mkdir()
    me = Identity.generate()

    async def find(need: object) -> list[object]:
        return []

    n = 3 * COMPARES_AT_ONCE
    policy = VerifyPolicy(replicas=2, quorum=2, compare="command", command=("judge",))
    run = JobRun(me, "job", [spec(k) for k in range(n)], mtr=1.0, now=0.0, verify=policy)
    dispatcher = Dispatcher(me, find, None, clock=trio.current_time)  # type: ignore[arg-type]
    command = (sys.executable, "-c", counting, str(running))
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.serve)
        dispatcher.add(run)
        for k in range(n):  # as its run asks once each group has two results
            run._out.append(Compare(f"job-{k:06d}", f"job-{k:06d}~2", command))
        dispatcher._flush("job")
        with trio.fail_after(60):
            while len(log.read_text().split() if log.exists() else []) < n:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    at_once = [int(x) for x in log.read_text().split()]
    assert max(at_once) <= COMPARES_AT_ONCE, at_once


async def test_no_room_for_its_files_is_an_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))  # (a full disk, say)
    same, error = await compare_results((sys.executable, "-c", SAME), 1, 1)
    assert same is None and "could not write the results for" in error


async def test_json_results_too_large_to_hold_are_compared_by_the_dispatcher() -> None:
    """A json compare the run could not make (an output in the store only) is made in the
    shell by the json rule, within the job's tolerance."""
    me = Identity.generate()

    async def find(need: object) -> list[object]:
        return []

    policy = VerifyPolicy(replicas=2, quorum=2, compare="json", tolerance=0.01)
    run = JobRun(me, "job", [spec(0), spec(1)], mtr=1.0, now=0.0, verify=policy)
    told: list[tuple[str, str, bool | None]] = []
    run.compared = lambda a, b, same, now, error="": told.append((a, b, same))  # type: ignore[method-assign]
    for k, x in ((0, 1.001), (1, 1.5)):
        run.tasks[f"job-{k:06d}"].output = {"x": 1.0}
        run.tasks[f"job-{k:06d}~2"].output = {"x": x}
    dispatcher = Dispatcher(me, find, None, clock=trio.current_time)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.serve)
        dispatcher.add(run)
        for k in range(2):
            run._out.append(Compare(f"job-{k:06d}", f"job-{k:06d}~2", None))
        dispatcher._flush("job")
        with trio.fail_after(10):
            while len(told) < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert sorted(told) == [
        ("job-000000", "job-000000~2", True),
        ("job-000001", "job-000001~2", False),
    ]
