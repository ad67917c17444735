"""Verified results (`verify:`), between the real scheduler and worker cores on the virtual
clock (`tests.harness.net`): copies on different workers, a result kept only once enough agree,
the others disputed and not paid, sampling, compare rules, no quorum, measured run times."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import DispatchConfig, JobRun, VerifyPolicy
from p2psched.scheduler.run.agreement import json_agree, sample_rate
from p2psched.worker import manager as wm
from tests.harness.net import Net, ad, spec, stored_of

S = TaskState


def verified_net(
    n_tasks: int,
    n_workers: int,
    policy: VerifyPolicy,
    *,
    liars: dict[int, Any] | None = None,
    prices: list[float] | None = None,
    retries: int = 2,
    seed: int = 1,
    labels: dict[int, tuple[tuple[str, str], ...]] | None = None,
    addresses: dict[int, str] | None = None,
    hold: bool = False,
    **run_options: Any,
) -> tuple[Net, list[bytes]]:
    """A job of `n_tasks` echo tasks verified by `policy` over `n_workers` workers (one slot
    each); `liars`: worker index -> what it answers instead of the echo; `hold`: started
    tasks wait for the test to finish them; `run_options`: more of `JobRun`'s."""
    sched = Identity.generate()
    ids = [Identity.generate() for _ in range(n_workers)]
    prices = prices or [0.01] * n_workers
    workers = {
        i.node_id: wm.TaskManager(i, slots=1, queue_depth=1, price=p)
        for i, p in zip(ids, prices, strict=True)
    }
    tasks = [spec(k, retries=retries) for k in range(n_tasks)]
    run = JobRun(
        sched,
        "job",
        tasks,
        mtr=1.0,
        now=1000.0,
        verify=policy,
        rng=random.Random(seed),
        **run_options,
    )
    net = Net(run, workers, hold=hold)
    for k, answer in (liars or {}).items():
        net.answers[ids[k].node_id] = answer
    ads = [
        ad(
            i,
            p,
            labels=(labels or {}).get(k, ()),
            address=(addresses or {}).get(k, "127.0.0.1:1"),
        )
        for k, (i, p) in enumerate(zip(ids, prices, strict=True))
    ]
    run.add_workers(ads, net.now)
    net.pump()
    return net, [i.node_id for i in ids]


def run_out(net: Net, seconds: float = 120.0) -> None:
    for _ in range(int(seconds)):
        if net.run.done:
            return
        net.advance(1)
    assert net.run.done, net.run.counts()


def wrong(x: Any) -> Any:
    return {"out": {"n": -1}}


def test_replicas_keep_only_results_that_agree_and_never_pay_a_liar() -> None:
    net, ids = verified_net(20, 4, VerifyPolicy(replicas=2, quorum=2), liars={0: wrong})
    run_out(net)
    run = net.run
    liar = ids[0]
    assert run.counts() == {"completed": 20}
    assert run.total == 20
    for k in range(20):
        kept = run.kept(f"job-{k:06d}")
        assert kept is not None and kept.output == {"out": {"n": k}}
        assert kept.receipt is not None and kept.receipt.worker != liar
        copies = [run.tasks[c] for c in run.groups[f"job-{k:06d}"].copies]
        ran = [c.receipt.worker for c in copies if c.receipt is not None]
        assert len(ran) == len(set(ran))  # never two copies on one worker
    disputed = [t for t in run.tasks.values() if t.state == S.DISPUTED]
    assert disputed and all(t.receipt and t.receipt.worker == liar for t in disputed)
    paid = [t for t in run.tasks.values() if t.state == S.COMPLETED]
    assert all(t.receipt and t.receipt.worker != liar for t in paid)
    assert run.spent == pytest.approx(sum(t.price for t in paid))
    assert run.held == 0
    assert run.views.disputes(liar) == len(disputed) >= 1
    # every task settled once, by its own id, never a copy's
    assert sorted(net.settled) == [f"job-{k:06d}" for k in range(20)]
    report = run.verification_report()
    assert report is not None and report["disputed"] == len(disputed)
    assert report["copies"] == len(run.tasks) - 20


def test_a_liar_is_skipped_once_disputed() -> None:
    net, ids = verified_net(30, 4, VerifyPolicy(replicas=2, quorum=2), liars={0: wrong})
    run_out(net)
    liar_results = [
        t for t in net.run.tasks.values() if t.receipt is not None and t.receipt.worker == ids[0]
    ]
    # A fair share would be 15 of the 60 copies; once disputed it gets nothing new (what it
    # held already, its slot and its queue, may still come back and be disputed).
    assert len(liar_results) <= 6
    assert net.run.views.skipped(ids[0], net.now)


def test_no_quorum_fails_the_task_and_pays_none() -> None:
    def mine(k: int) -> Any:
        return lambda x: {"out": x, "by": k}

    policy = VerifyPolicy(replicas=2, quorum=2)
    net, ids = verified_net(1, 3, policy, liars={0: mine(0), 1: mine(1), 2: mine(2)}, retries=0)
    run_out(net)
    run = net.run
    assert run.counts() == {"failed": 1}
    assert run.kept("job-000000") is None
    assert run.spent == 0 and run.held == 0
    first = run.tasks["job-000000"]
    assert first.error is not None and "no 2 of its results agreed" in first.error
    assert not any(run.views.disputes(w) for w in ids)  # no one is blamed without a quorum
    assert net.settled == ["job-000000"]
    report = run.verification_report()
    assert report is not None and report["no_quorum"] == 1


def test_a_disagreement_runs_another_copy_that_breaks_the_tie() -> None:
    net, ids = verified_net(1, 3, VerifyPolicy(replicas=2, quorum=2), liars={0: wrong})
    run_out(net)
    g = net.run.groups["job-000000"]
    kept = net.run.kept("job-000000")
    assert kept is not None and kept.output == {"out": {"n": 0}}
    assert len(g.copies) in (2, 3)  # a third only if the liar took one of the first two


def test_copies_keep_apart_from_one_operator() -> None:
    op = (("operator", "acme"),)
    net, ids = verified_net(6, 3, VerifyPolicy(replicas=2, quorum=2), labels={0: op, 1: op})
    run_out(net)
    for g in net.run.groups.values():
        ran = {net.run.tasks[c].receipt.worker for c in g.copies if net.run.tasks[c].receipt}
        assert not {ids[0], ids[1]} <= ran  # never both of acme's workers


def test_copies_prefer_other_networks() -> None:
    addrs = {0: "10.1.0.1:1", 1: "10.1.0.2:1", 2: "10.2.0.1:1"}
    net, ids = verified_net(1, 3, VerifyPolicy(replicas=2, quorum=2), addresses=addrs)
    run_out(net)
    g = net.run.groups["job-000000"]
    ran = {net.run.tasks[c].receipt.worker for c in g.copies if net.run.tasks[c].receipt}
    assert ids[2] in ran  # the one worker on another /16 took a copy


def test_json_compare_takes_numbers_within_the_tolerance() -> None:
    def off(d: float) -> Any:
        return lambda x: {"out": x, "score": 0.5 + d}

    liars = {0: off(0.0), 1: off(1e-9), 2: off(0.3)}
    close = VerifyPolicy(replicas=2, quorum=2, compare="json", tolerance=1e-6)
    net, ids = verified_net(4, 3, close, liars=liars)
    run_out(net)
    assert net.run.counts() == {"completed": 4}
    assert net.run.views.disputes(ids[0]) + net.run.views.disputes(ids[1]) == 0
    exact = VerifyPolicy(replicas=2, quorum=2)
    net, ids = verified_net(4, 3, exact, liars=liars)
    run_out(net)
    assert net.run.counts() != {"completed": 4}  # exact: every worker disagrees with the others


def test_json_agree() -> None:
    assert json_agree({"a": [1, 2.0]}, {"a": [1.0, 2]}, 0.0)
    assert json_agree({"a": 1.0}, {"a": 1.0 + 1e-12}, 1e-9)
    assert not json_agree({"a": 1.0}, {"a": 1.1}, 1e-9)
    assert not json_agree({"a": 1}, {"b": 1}, 1.0)
    assert not json_agree([1, 2], [1, 2, 3], 1.0)
    assert not json_agree(True, 1, 1.0)
    assert not json_agree(float("nan"), float("nan"), 1.0)
    assert not json_agree("x", "y", 1.0)
    assert json_agree(1000.0, 1001.0, 1e-3)  # relative


def test_a_compare_command_is_asked_one_pair_at_a_time() -> None:
    policy = VerifyPolicy(replicas=2, quorum=2, compare="command", command=("judge",))
    net, ids = verified_net(1, 2, policy, liars={0: lambda x: {"out": x, "by": 0}})
    assert net.run.done is False
    (ask,) = net.compares
    assert ask.command == ("judge",)
    net.compares.clear()
    net.run.compared(ask.a, ask.b, True, net.now)  # the judge says they agree
    net.pump()
    assert net.run.counts() == {"completed": 1} and net.run.spent == pytest.approx(0.02)
    assert not net.compares


def test_a_compare_command_that_fails_fails_the_task_blaming_no_one() -> None:
    policy = VerifyPolicy(replicas=2, quorum=2, compare="command", command=("judge",))
    net, ids = verified_net(1, 2, policy, liars={0: lambda x: {"out": x, "by": 0}})
    (ask,) = net.compares
    net.run.compared(ask.a, ask.b, None, net.now, "'judge' exited with 2")
    net.pump()
    assert net.run.counts() == {"failed": 1} and net.run.spent == 0
    assert "compare command failed: 'judge' exited with 2" in str(net.run.tasks[ask.a].error)
    assert not any(net.run.views.disputes(w) for w in ids)


def test_sampling_checks_a_new_worker_and_catches_a_liar() -> None:
    net, ids = verified_net(40, 4, VerifyPolicy(sample=0.1, quorum=2), liars={0: wrong})
    run_out(net)
    run = net.run
    assert run.views.disputes(ids[0]) >= 1
    for k in range(40):
        kept = run.kept(f"job-{k:06d}")
        assert kept is not None
    checked = [g for g in run.groups.values() if g.checked]
    assert 0 < len(checked) <= 40
    assert sorted(net.settled) == sorted(run.groups)


def test_sample_rate_falls_with_a_clean_record() -> None:
    assert sample_rate(0.1, 0, 0) == 1.0
    assert sample_rate(0.1, 100, 1) == 1.0  # a dispute on record: every result
    rates = [sample_rate(0.1, c, 0) for c in range(40)]
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] == 0.1  # never below the job's own
    assert sample_rate(0.0, 0, 0) == 0.0


def test_cancel_ends_a_task_with_its_copies_and_pays_no_unverified_result() -> None:
    net, _ = verified_net(1, 3, VerifyPolicy(replicas=3, quorum=3), hold=True)
    run = net.run
    assert len(net.started) == 3
    for wid, peer, task in net.started[:2]:  # two results in; they wait for the third
        net.workers[wid].finished(peer, task["id"], {"out": task["input"]}, None, net.now)
    net.pump()
    assert sorted(t.state.value for t in run.tasks.values()) == ["sent", "verifying", "verifying"]
    assert run.counts() == {"sent": 1} and run.held == pytest.approx(0.03)
    assert run.cancel(["job-000000"], net.now)
    net.pump()
    assert {t.state for t in run.tasks.values()} == {S.ABORTED}
    assert run.spent == 0 and run.held == 0
    assert run.verification_report()["no_quorum"] == 0  # type: ignore[index]  # cancelled
    assert run.counts() == {"aborted": 1} and net.settled == ["job-000000"]
    assert run.done


def test_measured_run_times_and_a_false_claim_noted() -> None:
    net, ids = verified_net(0, 1, VerifyPolicy())
    a = ids[0]
    run = net.run
    net.hold = True
    run.add_tasks([spec(0)], net.now)
    net.pump()
    net.advance(3)  # it is seen running
    ((wid, peer, task),) = net.started
    # It ran about 3 s as we saw it, and claims 500 s (its clock, as it signs the receipt).
    net.workers[wid].finished(peer, task["id"], {"out": task["input"]}, None, net.now + 500)
    net.pump()
    t = run.tasks["job-000000"]
    assert t.state == S.COMPLETED and t.receipt is not None and t.receipt.duration > 400
    view = run.views.view(a)
    assert view["performance"]["models"][0]["mean_run"] < 10  # the measure, not the claim
    assert run.views._views[a].duration_mismatches == 1
    assert math.isfinite(run.workers[a].rtt)


def test_a_restarted_scheduler_judges_the_results_that_waited() -> None:
    """Two of three copies in (verifying) and the third's worker gone: restarted from its
    store, the job holds their money again, runs the third copy anew, and keeps the result
    once it agrees; a copy beyond the replicas (from a disagreement) comes back too."""

    sched = Identity.generate()
    ids = [Identity.generate() for _ in range(4)]
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=1, price=0.01) for i in ids}
    policy = VerifyPolicy(replicas=3, quorum=3)
    run = JobRun(sched, "job", [spec(0)], mtr=1.0, now=1000.0, verify=policy, durable=True)
    net = Net(run, workers, hold=True)
    run.add_workers([ad(i, 0.01) for i in ids[:3]], net.now)
    net.pump()
    for wid, peer, task in net.started[:2]:
        net.workers[wid].finished(peer, task["id"], {"out": task["input"]}, None, net.now)
    net.pump()
    assert sorted(t.state.value for t in run.tasks.values()) == ["sent", "verifying", "verifying"]
    stored = stored_of(run)
    again = JobRun(sched, "job", [spec(0)], mtr=1.0, now=net.now, verify=policy, durable=True)
    again.journal.clear()
    again.restore(stored, lambda w: ("127.0.0.1:1",), net.now)
    assert sorted(t.state.value for t in again.tasks.values()) == [
        "sent",
        "verifying",
        "verifying",
    ]
    assert again.held == pytest.approx(0.03) and again.spent == 0
    assert again.counts() == {"sent": 1}
    net.run = again
    net.hold = False
    net.started = []
    # the third copy's worker is gone: lost, it is run elsewhere, and the quorum is met
    net.workers.pop(ids[2].node_id)
    again.add_workers([ad(ids[3], 0.01)], net.now)
    again.disconnected(ids[2].node_id, "gone", net.now)
    run_out(net)
    assert again.counts() == {"completed": 1}
    assert again.spent == pytest.approx(0.03) and again.held == 0
    kept = again.kept("job-000000")
    assert kept is not None and kept.output == {"out": {"n": 0}}


def test_a_job_that_wants_capacity_proved_waits_for_the_challenge() -> None:
    from p2psched.scheduler.run import Challenge

    sched = Identity.generate()
    ids = [Identity.generate() for _ in range(2)]
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=1) for i in ids}
    run = JobRun(sched, "job", [spec(0)], mtr=1.0, now=1000.0, verify=VerifyPolicy(challenge=True))
    net = Net(run, workers)
    challenges: list[bytes] = []
    real = run.actions

    def actions() -> list[Any]:
        out = real()
        challenges.extend(a.worker for a in out if isinstance(a, Challenge))
        return [a for a in out if not isinstance(a, Challenge)]

    run.actions = actions  # type: ignore[method-assign]
    run.add_workers([ad(i) for i in ids], net.now)
    net.pump()
    net.advance(3)
    assert sorted(challenges) == sorted(w.node_id for w in ids)  # each asked once
    assert run.tasks["job-000000"].state == S.QUEUED  # no task before a capacity is proved
    a, b = ids
    run.views.challenged(a.node_id, False, "5x slower than its ad", now=net.now)
    run.challenged(a.node_id, net.now)
    net.pump()
    net.advance(2)
    assert run.tasks["job-000000"].state == S.QUEUED  # one that failed gets none
    run.views.challenged(b.node_id, True, None, now=net.now)
    run.challenged(b.node_id, net.now)
    net.pump()
    run_out(net)
    kept = run.kept("job-000000")
    assert kept is not None and kept.receipt is not None and kept.receipt.worker == b.node_id
    assert len(challenges) == 2  # (a reconnect would not ask again: the record has it)


def test_a_worker_that_refused_its_challenge_is_asked_again_later() -> None:
    from p2psched.scheduler.run import Challenge
    from p2psched.scheduler.run.verification import CHALLENGE_AGAIN_S

    sched = Identity.generate()
    a = Identity.generate()
    run = JobRun(sched, "job", [spec(0)], mtr=1.0, now=1000.0, verify=VerifyPolicy(challenge=True))
    net = Net(run, {a.node_id: wm.TaskManager(a)})
    asked: list[float] = []
    real = run.actions

    def actions() -> list[Any]:
        out = real()
        asked.extend(net.now for x in out if isinstance(x, Challenge))
        return [x for x in out if not isinstance(x, Challenge)]

    run.actions = actions  # type: ignore[method-assign]
    run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(CHALLENGE_AGAIN_S - 5)
    assert len(asked) == 1  # it refused (busy): no verdict, not asked again at once
    net.advance(10)
    assert len(asked) == 2 and asked[1] - asked[0] >= CHALLENGE_AGAIN_S


def test_workers_with_a_long_clean_record_are_checked_at_the_jobs_rate() -> None:
    net, ids = verified_net(0, 4, VerifyPolicy(sample=0.1, quorum=2), seed=7)
    for w in ids:
        for k in range(50):
            net.run.views.verified(w, f"earlier-{k}", now=net.now)
    net.run.add_tasks([spec(k) for k in range(200)], net.now)
    run_out(net, 600)
    checked = sum(g.checked for g in net.run.groups.values())
    assert 5 <= checked <= 40  # about a tenth of 200, not every one as for new workers
    assert net.run.counts() == {"completed": 200}


def test_late_binding_keeps_copies_apart_too() -> None:
    op = (("operator", "acme"),)
    net, ids = verified_net(0, 3, VerifyPolicy(replicas=2, quorum=2), labels={0: op, 1: op})
    net.run.strategy.set("late_binding")
    net.run.add_tasks([spec(k) for k in range(6)], net.now)
    run_out(net)
    assert net.run.counts() == {"completed": 6}
    for g in net.run.groups.values():
        ran = [net.run.tasks[c].receipt.worker for c in g.copies if net.run.tasks[c].receipt]
        assert len(ran) == len(set(ran)) and not {ids[0], ids[1]} <= set(ran)


def test_a_task_no_worker_takes_for_a_dispute_says_so() -> None:
    from p2psched.scheduler.run import DispatchConfig

    sched = Identity.generate()
    a = Identity.generate()
    run = JobRun(sched, "job", [spec(0)], mtr=1.0, now=1000.0, config=DispatchConfig(no_worker_s=5))
    net = Net(run, {a.node_id: wm.TaskManager(a)})
    run.views.disputed(a.node_id, "job-earlier", "its result disagreed", now=net.now)
    run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(10)
    t = run.tasks["job-000000"]
    assert t.state == S.FAILED
    assert t.error is not None and "skipped for 6 d" in t.error and "disputed" in t.error


@pytest.mark.parametrize("third", [{"made": "up"}, None])
def test_a_copy_not_needed_whose_result_comes_late_is_paid_only_if_it_agrees(third: Any) -> None:
    """Two results agree and the third copy is stopped (not needed); its worker's result,
    sent before the cancel reached it, is paid only if it agrees with the one kept: a made-up
    one is recorded, not paid, and its worker's record shows the dispute."""
    net, _ = verified_net(1, 3, VerifyPolicy(replicas=3, quorum=2), hold=True)
    run = net.run
    assert len(net.started) == 3
    for k, (wid, peer, task) in enumerate(net.started):  # all three answer at once
        answer = third if k == 2 and third is not None else {"out": task["input"]}
        net.workers[wid].finished(peer, task["id"], answer, None, net.now)
    net.pump()
    copies = [run.tasks[c] for c in run.groups["job-000000"].copies]
    assert sorted(c.state.value for c in copies) == ["aborted", "completed", "completed"]
    assert run.done and run.held == pytest.approx(0.0, abs=1e-9)
    late = net.started[2][0]
    if third is None:
        assert run.spent == pytest.approx(0.03)  # its signed commitment stands
        assert run.views.disputes(late) == 0
    else:
        assert run.spent == pytest.approx(0.02)  # the two that agree, not the made-up one
        assert run.views.disputes(late) == 1


def test_a_restart_pays_no_result_that_was_cancelled_while_it_waited_for_its_copies() -> None:
    """Two results wait for a third (verifying) when the task is cancelled: not paid; nor
    after a restart, which finds them aborted with their receipts. A late result that agreed
    with the one kept stays paid after it, a late made-up one unpaid."""
    sched = Identity.generate()
    ids = [Identity.generate() for _ in range(3)]
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=1, price=0.01) for i in ids}
    policy = VerifyPolicy(replicas=3, quorum=3)
    run = JobRun(sched, "job", [spec(0)], mtr=1.0, now=1000.0, verify=policy, durable=True)
    net = Net(run, workers, hold=True)
    run.add_workers([ad(i, 0.01) for i in ids], net.now)
    net.pump()
    for wid, peer, task in net.started[:2]:
        net.workers[wid].finished(peer, task["id"], {"out": task["input"]}, None, net.now)
    net.pump()
    run.cancel(None, net.now)
    net.pump()
    assert run.spent == 0 and run.held == 0 and run.counts() == {"aborted": 1}
    again = JobRun(sched, "job", [spec(0)], mtr=1.0, now=net.now, verify=policy, durable=True)
    again.restore(stored_of(run), lambda w: ("127.0.0.1:1",), net.now)
    assert again.counts() == {"aborted": 1} and again.done
    assert again.spent == 0 and again.held == 0

    # replicas 3, quorum 2: two agree, the third's result comes late
    for third, paid in (({"made": "up"}, 0.02), (None, 0.03)):
        policy = VerifyPolicy(replicas=3, quorum=2)
        run = JobRun(sched, "job", [spec(0)], mtr=1.0, now=1000.0, verify=policy, durable=True)
        net = Net(run, {i.node_id: wm.TaskManager(i, slots=1, price=0.01) for i in ids}, hold=True)
        run.add_workers([ad(i, 0.01) for i in ids], net.now)
        net.pump()
        for k, (wid, peer, task) in enumerate(net.started):
            answer = third if k == 2 and third is not None else {"out": task["input"]}
            net.workers[wid].finished(peer, task["id"], answer, None, net.now)
        net.pump()
        assert run.spent == pytest.approx(paid)
        again = JobRun(sched, "job", [spec(0)], mtr=1.0, now=net.now, verify=policy, durable=True)
        again.restore(stored_of(run), lambda w: ("127.0.0.1:1",), net.now)
        assert again.counts() == {"completed": 1}
        assert again.spent == pytest.approx(paid) and again.held == 0


def test_a_restarted_scheduler_keeps_a_tasks_copies_off_the_worker_that_ran_one() -> None:
    """One worker's result waits for its copy's (verifying) when the scheduler restarts; the
    copy's worker then goes: the copy runs again, but never on the worker whose result it is
    to check (its two results would agree with each other: one worker a quorum)."""
    sched = Identity.generate()
    ids = [Identity.generate() for _ in range(2)]
    workers = {i.node_id: wm.TaskManager(i, slots=1, queue_depth=1, price=0.01) for i in ids}
    policy = VerifyPolicy(replicas=2, quorum=2)
    run = JobRun(sched, "job", [spec(0)], mtr=1.0, now=1000.0, verify=policy, durable=True)
    net = Net(run, workers, hold=True)
    run.add_workers([ad(i, 0.01) for i in ids], net.now)
    net.pump()
    ((liar, peer, task),) = [s for s in net.started if s[2]["id"] == "job-000000"]
    net.workers[liar].finished(peer, task["id"], {"made": "up"}, None, net.now)
    net.pump()
    assert run.tasks["job-000000"].state == S.VERIFYING
    other = next(i.node_id for i in ids if i.node_id != liar)
    again = JobRun(sched, "job", [spec(0)], mtr=1.0, now=net.now, verify=policy, durable=True)
    again.restore(stored_of(run), lambda w: ("127.0.0.1:1",), net.now)
    net.run, net.hold, net.started = again, False, []
    net.answers[liar] = lambda x: {"made": "up"}
    net.workers.pop(other)
    again.add_workers([ad(i, 0.01) for i in ids if i.node_id == liar], net.now)
    again.disconnected(other, "gone", net.now)
    net.advance(5)
    copy = again.tasks["job-000000~2"]
    assert copy.placed_on != liar, copy.state
    assert again.kept("job-000000") is None and again.spent == 0


def test_a_budget_that_cannot_pay_for_a_copy_ends_its_task_not_the_job_forever() -> None:
    """Budget for three results, two tasks run in two copies each: the fourth copy can never
    be paid for (the money held for the result waiting on it comes back only once it ran).
    Its task fails, saying the budget is spent; the job ends, within its budget."""
    policy = VerifyPolicy(replicas=2, quorum=2)
    config = DispatchConfig(no_worker_s=5.0)
    net, _ = verified_net(2, 4, policy, budget=0.03, config=config)
    run = net.run
    run_out(net, 120)
    assert run.counts() == {"completed": 1, "failed": 1}
    assert run.spent == pytest.approx(0.02) and run.held == 0
    failed = next(t for t in run.tasks.values() if t.state == S.FAILED and t.error)
    assert "budget is spent" in str(failed.error)


def test_json_results_too_large_to_hold_are_compared_by_the_json_rule_not_exactly() -> None:
    """A durable run keeps outputs over `spool_result_bytes` in its store only: two of them
    within the tolerance still agree (the shell compares them from the store, asked as for a
    compare command); an honest worker is not disputed for the size of its result."""
    policy = VerifyPolicy(replicas=3, quorum=2, compare="json", tolerance=0.01)
    config = DispatchConfig(spool_result_bytes=100)
    net, ids = verified_net(1, 3, policy, hold=True, durable=True, config=config)
    run = net.run
    outputs: dict[str, Any] = {}
    for k, (wid, peer, task) in enumerate(net.started):
        outputs[task["id"]] = {"x": 1.001 if k == 0 else 1.0, "pad": "a" * 500}
        net.workers[wid].finished(peer, task["id"], outputs[task["id"]], None, net.now)
        net.pump()
        for ask in net.compares:  # as the shell answers, the outputs read from the store
            assert ask.command is None
            same = json_agree(outputs[ask.a], outputs[ask.b], policy.tolerance)
            run.compared(ask.a, ask.b, same, net.now)
        net.compares.clear()
        net.pump()
    assert run.counts() == {"completed": 1}
    assert not any(t.state == S.DISPUTED for t in run.tasks.values())
    assert sum(run.views.disputes(w) for w in ids) == 0


def test_a_sampled_result_no_other_worker_could_check_stands_unchecked() -> None:
    from p2psched.scheduler.run import DispatchConfig

    sched = Identity.generate()
    a = Identity.generate()
    run = JobRun(
        sched,
        "job",
        [spec(0)],
        mtr=1.0,
        now=1000.0,
        config=DispatchConfig(no_worker_s=5),
        verify=VerifyPolicy(sample=0.1, quorum=2),
    )
    net = Net(run, {a.node_id: wm.TaskManager(a, price=0.01)})
    run.add_workers([ad(a, 0.01)], net.now)
    net.pump()
    run_out(net)
    assert run.counts() == {"completed": 1} and run.spent == pytest.approx(0.01)
    assert run.views.clean(a.node_id) == 0  # not credited: nobody checked it
    assert len(run.groups["job-000000"].copies) == 2  # one check was tried, and found no one


def test_quorum_one_with_replicas_is_refused() -> None:
    from p2psched.scheduler.job import JobSpecError, parse_job

    doc = {"name": "q", "tasks": [{"input": 1}], "verify": {"replicas": 3, "quorum": 1}}
    with pytest.raises(JobSpecError, match="quorum 1 with replicas 3 keeps whichever"):
        parse_job(doc)


def test_a_worker_slow_to_quote_on_purpose_does_not_look_fast() -> None:
    """The round trip subtracted from a measured run is at most MAX_RTT_S: a worker that
    answers quotes late (which makes its round trip look long) gains nothing by it."""
    from p2psched.scheduler.run.config import MAX_RTT_S

    net, ids = verified_net(0, 1, VerifyPolicy())
    run = net.run
    net.hold = True
    run.add_tasks([spec(0)], net.now)
    net.pump()
    run.workers[ids[0]].rtt = 30.0  # as if it sat on every quote request for 30 s
    net.advance(10)
    ((wid, peer, task),) = net.started
    net.workers[wid].finished(peer, task["id"], {"out": task["input"]}, None, net.now)
    net.pump()
    mean_run = run.views.view(ids[0])["performance"]["models"][0]["mean_run"]
    assert mean_run >= 10 - MAX_RTT_S - 1.0  # (a beat's interval of doubt)


def test_a_worker_never_gets_both_copies_of_a_task_even_when_it_is_the_only_one() -> None:
    """With one worker known, a task's second copy waits for another rather than going to
    the worker that ran the first (excluded the moment it was chosen); once another worker
    comes, it runs there."""
    sched = Identity.generate()
    a, b = Identity.generate(), Identity.generate()
    workers = {i.node_id: wm.TaskManager(i, slots=2, queue_depth=2) for i in (a, b)}
    run = JobRun(
        sched, "job", [spec(0)], mtr=1.0, now=1000.0, verify=VerifyPolicy(replicas=2, quorum=2)
    )
    net = Net(run, workers)
    run.add_workers([ad(a)], net.now)
    net.pump()
    net.advance(5)
    first, second = (run.tasks[c] for c in run.groups["job-000000"].copies)
    assert first.state == S.VERIFYING and second.state == S.QUEUED
    run.add_workers([ad(b)], net.now)
    run_out(net)
    assert run.counts() == {"completed": 1}
    assert {first.receipt.worker, second.receipt.worker} == {a.node_id, b.node_id}  # type: ignore[union-attr]
