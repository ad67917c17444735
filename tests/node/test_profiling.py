"""The opt-in stage clock behind bench/dispatch.py's per-task CPU table: off unless asked for,
each stage's seconds its own, and a snapshot written on SIGUSR1 and when the node closes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from p2psched.identity import Identity
from p2psched.node.profiling import PROFILE_ENV, STAGES, StageClock, profiled
from p2psched.store.store import Store
from p2psched.wire import deal
from p2psched.wire.deal import Quote, Receipt


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_stage_counts_its_own_time_not_that_of_the_stages_it_calls() -> None:
    clock = StageClock()
    inner = clock.timed("inner", lambda: _burn(0.02))

    def outer_work() -> None:
        _burn(0.01)
        inner()

    clock.timed("outer", outer_work)()
    assert clock.calls == {"outer": 1, "inner": 1}
    assert clock.seconds["inner"] >= 0.02
    assert 0.01 <= clock.seconds["outer"] < clock.seconds["inner"]


def test_unset_nothing_is_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    write, verify = Store.write, vars(deal)["verify"]
    with profiled("node") as clock:
        assert clock is None
        assert (Store.write, vars(deal)["verify"]) == (write, verify)


def test_set_it_times_the_stages_and_writes_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PROFILE_ENV, str(tmp_path))
    write, verify, sign = Store.write, vars(deal)["verify"], Identity.sign
    identity = Identity.generate(id_bits=0)
    receipt = Receipt(
        worker=identity.node_id,
        scheduler=b"s" * 32,
        job="j",
        task="j.0",
        ok=True,
        result_hash=b"h" * 32,
        duration=0.0,
        price=0.0,
        finished_at=0.0,
    ).signed(identity)
    with profiled("worker") as clock:
        assert clock is not None
        assert Store.write is not write and vars(deal)["verify"] is not verify
        os.kill(os.getpid(), signal.SIGUSR1)  # (its handler runs before the next line)
        (first,) = tmp_path.glob(f"worker-{os.getpid()}-*.json")
        assert receipt.verify(identity.public_key)  # its Ed25519 check, inside the receipt's
    assert (Store.write, vars(deal)["verify"], Identity.sign) == (write, verify, sign)  # put back
    written = set(tmp_path.glob(f"worker-{os.getpid()}-*.json"))
    assert len(written) == 2 and first in written
    at_signal = json.loads(first.read_text())
    at_close = json.loads((written - {first}).pop().read_text())
    assert at_signal["calls"] == {} and at_close["calls"] == {"verify": 1}
    assert at_close["seconds"]["verify"] > 0 and at_close["cpu"] > at_signal["cpu"]
    assert set(STAGES) >= {"decrypt", "scheduler core", "worker core", "sign", "store write"}


def test_an_inherited_method_timed_is_inherited_again_after() -> None:
    clock = StageClock()
    clock.install({"sign": ["p2psched.wire.deal:Quote.signed"]})
    assert "signed" in vars(Quote)
    clock.uninstall()
    assert "signed" not in vars(Quote) and Quote.signed is deal.Receipt.signed
