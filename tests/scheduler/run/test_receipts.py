"""The check a result must pass before its task counts as done and its worker is paid: a
forged receipt of each kind is not counted, and the task runs elsewhere; receipts signed in a
batch cost one signature check per batch, and one forged within a batch is refused the same."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from msgspec.structs import replace as restruct

from p2psched.identity import Identity
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.run import DispatchConfig, JobRun, Spooled
from p2psched.store.journal import Charged
from p2psched.wire.codec import decode, encode
from p2psched.wire.deal import Receipt
from p2psched.worker import manager as wm
from tests.harness.net import BATCH_FORGERIES, Net, ad, make_net, receipts_verify, spec

S = TaskState


FORGERIES = [
    "signature",
    "other_key",
    "hash",
    "oversize",
    "price",
    # Each of these passes every check but one:
    "signer_id",  # names another worker, signed by this one's key (the id-to-key binding)
    "scheduler",  # a good receipt, for another scheduler
    "job",  # ... for another job
    "task",  # ... for another task
    "ok_flag",  # "not ok" with no error: a failed task's receipt charging a fortune
]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_receipt_is_not_counted_and_the_task_runs_elsewhere(forgery: str) -> None:
    net = make_net(0, 0)
    liar, honest, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    net.workers = {
        liar.node_id: wm.TaskManager(liar, price=0.5),
        honest.node_id: wm.TaskManager(honest, price=0.9),
    }
    net.run = JobRun(
        net.run.identity,
        "job",
        [spec(0)],
        mtr=0,
        now=net.now,
        config=DispatchConfig(max_result_bytes=1000),
    )

    def forge(m: dict[str, Any]) -> dict[str, Any]:
        if m["t"] != "result":
            return m
        r = Receipt.from_wire(m["receipt"], "r")
        if forgery == "signature":
            r = restruct(r, sig=bytes(64))
        elif forgery == "other_key":
            r = restruct(r, worker=stranger.node_id).signed(stranger)
        elif forgery == "hash":
            m = {**m, "output": "something else"}
        elif forgery == "oversize":
            out = "x" * 5000
            from p2psched.wire.deal import result_hash

            r = restruct(r, result_hash=result_hash(out)).signed(liar)
            m = {**m, "output": out}
        elif forgery == "price":
            r = restruct(r, price=7.0).signed(liar)
        elif forgery == "signer_id":
            r = restruct(r, worker=stranger.node_id).signed(liar)
        elif forgery == "scheduler":
            r = restruct(r, scheduler=stranger.node_id).signed(liar)
        elif forgery == "job":
            r = restruct(r, job="another-job").signed(liar)
        elif forgery == "task":
            r = restruct(r, task="job/99").signed(liar)
        elif forgery == "ok_flag":
            from p2psched.wire.deal import result_hash

            nothing = result_hash(None)
            r = restruct(r, ok=False, price=1000.0, result_hash=nothing).signed(liar)
            m = {**m, "output": None, "error": None}
        return {**m, "receipt": r.to_wire()}

    net.behave[liar.node_id] = forge
    net.run.add_workers([ad(liar, 0.5), ad(honest, 0.9)], net.now)
    net.pump()
    t = net.run.tasks["job-000000"]
    assert [w for w, _ in net.closed] == [liar.node_id]
    assert t.state == S.COMPLETED and t.worker == honest.node_id
    assert net.run.spent == pytest.approx(0.9)


@pytest.mark.parametrize("durable", [True, False])
def test_an_output_over_the_spool_size_is_handed_to_the_store_not_kept(durable: bool) -> None:
    """A durable run keeps no output over `spool_result_bytes` in memory: its `Charged`
    entry takes it to the store. A run with no store keeps every output."""
    net = make_net(0, 1)
    config = DispatchConfig(spool_result_bytes=len(encode({"out": {"n": 0}})) - 1)
    tasks = [spec(0), replace(spec(1), input=0)]  # outputs {"out": {"n": 0}} and {"out": 0}
    net.run = JobRun(
        net.run.identity, "job", tasks, mtr=0, now=net.now, config=config, durable=durable
    )
    [worker] = net.workers
    net.run.add_workers([ad(net.workers[worker].identity)], net.now)
    net.pump()
    big, small = (net.run.tasks[t.task_id] for t in tasks)
    assert big.state == small.state == S.COMPLETED
    assert big.output == (Spooled.IN_STORE if durable else {"out": {"n": 0}})
    assert small.output == {"out": 0}
    charged = [e for e in net.run.journal if isinstance(e, Charged)]
    assert [decode(e.output) for e in charged] == (
        [{"out": {"n": 0}}, {"out": 0}] if durable else []
    )


def batched_net(forge: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Net:
    """Four tasks on a worker of four slots, whose results end in one step (so their
    receipts come in one batch), `forge` rewriting what it sends; an honest worker besides."""
    net = make_net(0, 0)
    liar, honest = Identity.generate(), Identity.generate()
    net.workers = {
        liar.node_id: wm.TaskManager(liar, slots=4, queue_depth=0, price=0.5),
        honest.node_id: wm.TaskManager(honest, slots=4, queue_depth=0, price=0.9),
    }
    net.run = JobRun(net.run.identity, "job", [spec(k) for k in range(4)], mtr=0, now=net.now)
    if forge is not None:
        net.behave[liar.node_id] = forge
    net.run.add_workers([ad(liar, 0.5), ad(honest, 0.9)], net.now)
    net.pump()
    return net


def test_a_batch_of_receipts_costs_the_scheduler_one_signature_check() -> None:
    net = batched_net()
    receipts_verify(net)
    liar = next(w for w in net.run.workers.values() if w.ad.profile.min_price == 0.5)
    receipts = [t.receipt for t in net.run.tasks.values() if t.receipt is not None]
    assert {r.worker for r in receipts} == {liar.node_id}  # (the cheaper one took them all)
    assert [r.batch.index for r in receipts if r.batch] == [0, 1, 2, 3]
    assert liar.roots.signatures == 1


@pytest.mark.parametrize("forgery", BATCH_FORGERIES)
def test_a_receipt_forged_within_a_batch_drops_its_worker_naming_why(forgery: str) -> None:
    """The batch's first receipt is good (its root's signature checked, and known from then
    on); its second is forged: refused, its worker dropped, the task run elsewhere."""
    stranger = Identity.generate()

    def forge(m: dict[str, Any]) -> dict[str, Any]:
        if m["t"] != "result" or m["receipt"].get("batch", {}).get("index") != 1:
            return m
        r = Receipt.from_wire(m["receipt"], "r")
        return {**m, "receipt": BATCH_FORGERIES[forgery](r, stranger).to_wire()}

    net = batched_net(forge)
    [(liar, reason)] = net.closed
    why = "has a batch proof whose index" if forgery == "past_tree" else "is not in a batch signed"
    assert reason.startswith(f"receipt for job-000001 {why}")
    forged = net.run.tasks["job-000001"]
    assert forged.state == S.COMPLETED and forged.receipt is not None
    assert forged.receipt.worker != liar
