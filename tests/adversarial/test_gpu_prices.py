"""A scheduler that pays for fewer GPUs than its tasks take, against a real worker process
(`p2psched worker join`) on a recorded 4-GPU, 4-slot machine (its NVML answers from
tests/resources/data, through a `pynvml` put on its path): a task is quoted by the slots its
GPUs take; a commitment for all four GPUs at one slot's price is rejected; a task committed
for one GPU that then asks for four is refused, whether sent with its commitment or after;
paid for four, it runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from p2psched.identity import Identity
from p2psched.wire.deal import Commitment
from p2psched.wire.messages import Lease, Message, QuoteReply, Reject, Result
from tests.adversarial.test_scheduler_policy import Scripted, said, scripted
from tests.harness.processes import gate_and_worker

ROOT = Path(__file__).resolve().parent.parent.parent
# NVML as the worker process imports it: the recorded machine's answers.
PYNVML = """\
from tests.harness.nvml import RecordedNvml, recording

_nvml = RecordedNvml(recording("nvml_4x_l4.json"))


def __getattr__(name):
    return getattr(_nvml, name)
"""
CONFIG = """\
[worker]
slots = 4
min_price = 1.0
drivers = ["command"]
[drivers.command.programs.wc]
argv = ["/usr/bin/wc"]
params = { lines = { type = "flag", arg = "-l" } }
"""


def wc(task_id: str, gpus: int) -> dict[str, object]:
    """A task counting two lines, asking for `gpus` GPUs."""
    command = {"program": "wc", "params": {"lines": True}, "stdin": "a\\nb\\n"}
    return {
        "id": task_id,
        "driver": "command",
        "model": None,
        "input": command,
        "timeout": 30.0,
        "gpus": gpus,
    }


async def commit(
    s: Scripted, ids: list[str], price: float, gpus: int, run: list[dict[str, object]]
) -> Message:
    """`s` commits `ids` at `price` each, for tasks of `gpus` GPUs, sending `run` with them."""
    s.rid += 1
    c = Commitment(s.identity.node_id, s.worker, "job", ids, price, time.time(), gpus)
    await s.say(
        {"t": "commit", "rid": s.rid, "commitment": c.signed(s.identity).to_wire(), "run": run}
    )
    return await s.answer()


async def test_a_scheduler_cannot_take_four_gpus_for_one_slots_price(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "nvml").mkdir()
    (tmp_path / "nvml" / "pynvml.py").write_text(PYNVML)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'nvml'}:{ROOT}")
    with gate_and_worker(tmp_path, CONFIG) as (_, address, worker, proc):
        async with scripted(address, worker, Identity.generate()) as liar:
            ask = {"driver": "command", "max_price": 10.0}
            one, four = await liar.ask(**ask, gpus=1), await liar.ask(**ask, gpus=4)
            assert isinstance(one, QuoteReply) and isinstance(four, QuoteReply)
            assert (one.quote.price, one.quote.gpus) == (1.0, 1)
            assert (four.quote.price, four.quote.gpus) == (4.0, 4)

            rejected = await commit(liar, ["job/0"], 1.0, 4, [])
            assert isinstance(rejected, Reject)
            assert said(rejected) == "price 1 is below this worker's minimum 4 for a task of 4 GPUs"

            # Quoted and committed for one GPU, sent asking for four: refused either way.
            rejected = await commit(liar, ["job/1"], 1.0, 1, [wc("job/1", 4)])
            assert isinstance(rejected, Reject)
            assert said(rejected) == ("task job/1 asks for 4 GPUs, but its commitment is for 1 GPU")
            assert isinstance(await commit(liar, ["job/2"], 1.0, 1, []), Lease)
            await liar.say({"t": "run", "tasks": [wc("job/2", 4)]})
            refused = await liar.answer()
            assert isinstance(refused, Result) and refused.receipt.price == 0.0
            assert said(refused) == ("task job/2 asks for 4 GPUs, but its commitment is for 1 GPU")

            # Paid for all four, it runs.
            leased = await commit(liar, ["job/3"], 4.0, 4, [wc("job/3", 4)])
            assert isinstance(leased, Lease)
            done = await liar.answer()
            assert isinstance(done, Result) and done.error is None, said(done)
            assert done.receipt.price == 4.0
        assert proc.poll() is None
