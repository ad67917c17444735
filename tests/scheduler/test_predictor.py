"""The predictor against known distributions, its fallbacks, its modes and frozen tables,
and the bound on what it learns, all on explicit `now` values."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psched.scheduler.estimate import Estimate, size_bucket
from p2psched.scheduler.lookup_table import LookupTable
from p2psched.scheduler.predictor import Predictor
from p2psched.wire.schema import SchemaError

A = b"\xaa" * 32
B = b"\xbb" * 32


def feed(p: Predictor, worker: bytes, model: str | None, size: int, runs: list[float]) -> None:
    for i, run in enumerate(runs):
        p.observe(worker, model, size, wait_s=run / 10, run_s=run, now=float(i))


# -- learning -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_converges_on_a_normal_distribution(seed: int) -> None:
    # alpha_min 0.01 keeps about the last 200 samples, so the spread estimate is within ~5%
    # (one standard error); the default 0.05 (about 40) tracks drift faster but is noisier.
    r = random.Random(seed)
    p = Predictor(alpha_min=0.01)
    feed(p, A, "m", 1000, [r.gauss(10.0, 1.5) for _ in range(2000)])
    e = p.estimate(A, "m", 1000)
    assert e.source == "observed" and e.samples == 2000
    assert e.run_mean == pytest.approx(10.0, rel=0.03)
    assert e.run_err == pytest.approx(1.5, rel=0.15)
    assert e.wait_mean == pytest.approx(1.0, rel=0.03)
    assert e.wait_err == pytest.approx(0.15, rel=0.15)


@pytest.mark.parametrize("seed", range(5))
def test_converges_on_a_lognormal_distribution(seed: int) -> None:
    r = random.Random(seed)
    mu, sigma = 1.0, 0.25
    mean = math.exp(mu + sigma**2 / 2)
    spread = mean * math.sqrt(math.exp(sigma**2) - 1)
    p = Predictor(alpha_min=0.01)
    feed(p, A, None, 50, [r.lognormvariate(mu, sigma) for _ in range(2000)])
    e = p.estimate(A, None, 50)
    assert e.run_mean == pytest.approx(mean, rel=0.05)
    assert e.run_err == pytest.approx(spread, rel=0.15)


def test_first_observations_give_the_plain_mean_and_population_spread() -> None:
    p = Predictor()
    feed(p, A, "m", 10, [2.0, 4.0, 9.0])
    e = p.estimate(A, "m", 10)
    assert e.run_mean == pytest.approx(5.0)
    assert e.run_err == pytest.approx(math.sqrt(((2 - 5) ** 2 + (4 - 5) ** 2 + (9 - 5) ** 2) / 3))


def test_default_alpha_follows_drift_within_100_samples() -> None:
    r = random.Random(7)
    p = Predictor()  # alpha_min 0.05
    feed(p, A, "m", 1000, [r.gauss(10.0, 1.0) for _ in range(2000)])
    assert p.estimate(A, "m", 1000).run_mean == pytest.approx(10.0, rel=0.1)
    feed(p, A, "m", 1000, [r.gauss(20.0, 1.0) for _ in range(100)])
    e = p.estimate(A, "m", 1000)
    assert e.run_mean == pytest.approx(20.0, rel=0.05)
    # the plain mean of all 2100 samples would still say about 10.5
    assert e.run_mean > 19.0


def test_similar_sizes_share_a_bucket() -> None:
    assert size_bucket(0) == 0
    assert size_bucket(1000) == size_bucket(1023) == 10
    assert size_bucket(1024) == 11
    with pytest.raises(ValueError, match="size"):
        size_bucket(-1)
    p = Predictor()
    feed(p, A, "m", 1000, [3.0])
    assert p.estimate(A, "m", 600).source == "observed"
    assert p.estimate(A, "m", 2000).source == "worker"


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_observe_refuses_impossible_durations(bad: float) -> None:
    p = Predictor()
    with pytest.raises(ValueError, match="run_s"):
        p.observe(A, "m", 1, wait_s=0.0, run_s=bad, now=0.0)
    assert len(p) == 0


# -- fallbacks ------------------------------------------------------------------------------


def test_fallbacks_in_order_and_named() -> None:
    p = Predictor(default_wait=1.0, default_run=10.0)
    claim = {"claimed_run": 4.0, "claimed_wait": 0.5}

    # nothing known of B: its claim, else the default
    e = p.estimate(B, "m", 100, **claim)
    assert (e.source, e.run_mean, e.wait_mean, e.samples) == ("claimed", 4.0, 0.5, 0)
    assert e.run_err >= 4.0  # an unverified claim is not taken as precise
    assert p.estimate(B, "m", 100).source == "default"
    assert p.estimate(B, "m", 100).run_mean == 10.0
    # a quote's run_mean of 0 means "no history": not a claim
    assert p.estimate(B, "m", 100, claimed_run=0.0).source == "default"

    feed(p, A, "m", 100, [2.0, 2.0])
    feed(p, A, "m", 100_000, [8.0, 8.0])
    feed(p, A, "other", 100, [50.0])

    exact = p.estimate(A, "m", 100, **claim)
    assert (exact.source, exact.run_mean, exact.samples) == ("observed", 2.0, 2)
    # the same worker and model at a size it never ran: the mean over all its sizes
    other_size = p.estimate(A, "m", 10_000_000, **claim)
    assert (other_size.source, other_size.run_mean, other_size.samples) == ("worker", 5.0, 4)
    assert other_size.run_err == pytest.approx(3.0)  # the spread between sizes shows
    # the same worker, a model it never ran: the mean over everything it ran
    any_model = p.estimate(A, "new", 100, **claim)
    assert (any_model.source, any_model.samples) == ("worker", 5)
    assert any_model.run_mean == pytest.approx((2 + 2 + 8 + 8 + 50) / 5)


def test_a_claimed_wait_error_is_kept_when_wider_than_the_claim() -> None:
    p = Predictor()
    e = p.estimate(B, None, 1, claimed_run=3.0, claimed_wait=2.0, claimed_wait_err=5.0)
    assert (e.wait_mean, e.wait_err) == (2.0, 5.0)


# -- modes and tables -----------------------------------------------------------------------


def test_lookup_table_mode_answers_from_the_frozen_table() -> None:
    p = Predictor()
    feed(p, A, "m", 100, [2.0] * 10)
    live_before = p.estimate(A, "m", 100)
    p.set_mode("lookup_table")  # no table installed: freezes the current estimates
    assert p.mode == "lookup_table"
    frozen = p.estimate(A, "m", 100)
    assert (frozen.source, frozen.run_mean, frozen.samples) == ("table", 2.0, 10)

    feed(p, A, "m", 100, [30.0] * 50)
    feed(p, B, "m", 100, [1.0] * 5)
    assert p.estimate(A, "m", 100) == frozen  # the table did not move
    assert p.estimate(B, "m", 100).source == "default"  # not in the table
    assert p.estimate(A, "m", 10**9).source == "table"  # fallbacks within the table
    assert p.estimate(A, "m", 10**9).run_mean == 2.0

    p.set_mode("default")  # observations kept the learned model current meanwhile
    live = p.estimate(A, "m", 100)
    assert live.source == "observed" and live.samples == 60
    assert live.run_mean > 20.0 > live_before.run_mean
    assert p.estimate(B, "m", 100).source == "observed"


def test_loading_a_table_replaces_the_answers() -> None:
    p = Predictor()
    feed(p, A, "m", 100, [2.0] * 3)
    p.set_mode("lookup_table")
    shipped = LookupTable.of(
        {(A, "m", size_bucket(100)): Estimate(0.1, 0.0, 7.0, 1.0, 99, "table")},
        {},
        {},
        Estimate(9.0, 9.0, 90.0, 90.0, 0, "default"),
    )
    p.load_table(shipped)
    assert p.table is shipped
    assert p.estimate(A, "m", 100).run_mean == 7.0
    assert p.estimate(B, "m", 100).run_mean == 90.0  # the table's default
    assert p.estimate(B, "m", 100, claimed_run=3.0).source == "claimed"


@pytest.mark.parametrize("name", ["", "Default", "lookup", "shortest_queue"])
def test_an_unknown_mode_is_refused_naming_the_valid_ones(name: str) -> None:
    p = Predictor()
    with pytest.raises(ValueError) as info:
        p.set_mode(name)
    assert "'default'" in str(info.value) and "'lookup_table'" in str(info.value)
    assert p.mode == "default"


def test_a_table_survives_a_json_round_trip() -> None:
    p = Predictor()
    feed(p, A, "m", 100, [2.0, 3.0])
    feed(p, A, None, 5000, [7.5])
    feed(p, B, "x", 0, [0.25])
    table = p.freeze()
    text = json.dumps(table.to_json())
    again = LookupTable.from_json(json.loads(text), "predictor-table.json")
    assert again == table
    assert len(again.sizes) == 3 and len(again.models) == 3 and len(again.workers) == 2
    with pytest.raises(TypeError):
        again.sizes[(A, "m", 1)] = again.default  # type: ignore[index]


def test_a_bad_table_file_is_refused_naming_the_field() -> None:
    doc = Predictor().freeze().to_json()
    doc["workers"] = [{"worker": "zz", **doc["default"]}]
    with pytest.raises(SchemaError, match=r"t\.json\.workers\[0\]\.worker"):
        LookupTable.from_json(doc, "t.json")
    doc = Predictor().freeze().to_json()
    doc["version"] = 2
    with pytest.raises(SchemaError, match="version"):
        LookupTable.from_json(doc, "t.json")


def test_a_mode_switch_may_bring_its_table_and_a_bad_one_changes_nothing() -> None:
    p = Predictor()
    feed(p, A, "m", 100, [2.0])
    shipped = Predictor().freeze().to_json()
    shipped["workers"] = [{"worker": B.hex(), **shipped["default"], "run_mean": 42.0}]
    p.set_mode("lookup_table", shipped)
    assert p.mode == "lookup_table" and p.estimate(B, "m", 5).run_mean == 42.0
    assert p.estimate(A, "m", 100).source == "default"  # the table's, not what it learned
    row = {**shipped["default"], "worker": B.hex(), "model": "m", "bucket": -1}
    bad = {**shipped, "sizes": [row]}
    p.set_mode("default")
    with pytest.raises(SchemaError, match=r"table\.sizes\[0\]\.bucket"):
        p.set_mode("lookup_table", bad)
    with pytest.raises(ValueError, match="only with mode 'lookup_table'"):
        p.set_mode("default", shipped)
    assert p.mode == "default" and p.table is not None and p.table.workers[B].run_mean == 42.0


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3), st.integers(0, 1 << 20))))
def test_learned_keys_stay_bounded_and_the_newest_survive(
    obs: list[tuple[int, int, int]],
) -> None:
    p = Predictor(max_keys=12)
    for i, (w, m, size) in enumerate(obs):
        p.observe(bytes([w]) * 32, f"m{m}", size, wait_s=0.0, run_s=1.0, now=float(i))
        assert len(p) <= 12
    if obs:
        w, m, size = obs[-1]
        assert p.estimate(bytes([w]) * 32, f"m{m}", size).source == "observed"


def test_eviction_drops_the_least_recently_observed() -> None:
    p = Predictor(max_keys=6)  # two (worker, model, size) observations' worth
    p.observe(A, "m", 1, wait_s=0.0, run_s=1.0, now=0.0)
    p.observe(B, "m", 1, wait_s=0.0, run_s=1.0, now=1.0)
    p.observe(A, "m", 1, wait_s=0.0, run_s=1.0, now=2.0)  # A is now the more recent
    p.observe(b"\xcc" * 32, "m", 1, wait_s=0.0, run_s=1.0, now=3.0)
    assert len(p) == 6
    assert p.estimate(A, "m", 1).source == "observed"
    assert p.estimate(B, "m", 1).source == "default"
    assert p.last_observed(A) == 2.0 and p.last_observed(B) is None


def test_an_unknown_mode_is_named_in_a_bounded_message() -> None:
    # As /scheduler/predict_mode answers it, to anyone on loopback: not the whole name back.
    with pytest.raises(ValueError) as refused:
        Predictor(alpha_min=0.01).set_mode("a" * 100_000)
    assert "lookup_table" in str(refused.value) and len(str(refused.value)) < 1000
