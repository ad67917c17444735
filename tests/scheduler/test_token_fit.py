"""The token fit (online recursive least squares of run time on token counts) against known
lines, drift, inputs that do not vary and bad values; the predictor's use of it; and both ways
of predicting scored on the test set of tests/harness/token_runs.py."""

from __future__ import annotations

import math
import random

import pytest

from p2psched.scheduler.estimate import Tokens
from p2psched.scheduler.predictor import MIN_FIT_SAMPLES, Predictor
from p2psched.scheduler.token_fit import _TRACE_CAP, TokenFit
from tests.harness.token_runs import score, token_runs

A = b"\xaa" * 32
B = b"\xbb" * 32


def line(a: float, b: float, c: float, t: Tokens) -> float:
    return a + b * t.input + c * t.output


def random_tokens(r: random.Random) -> Tokens:
    return Tokens(r.randrange(1, 4000), r.randrange(1, 1024))


def test_learns_a_noiseless_line() -> None:
    r = random.Random(1)
    fit = TokenFit()
    for _ in range(50):
        t = random_tokens(r)
        fit.add(t, line(0.3, 0.0002, 0.02, t))
    for _ in range(20):
        t = random_tokens(r)
        assert fit.predict(t) == pytest.approx(line(0.3, 0.0002, 0.02, t), rel=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_its_error_is_the_spread_of_the_noise(seed: int) -> None:
    r = random.Random(seed)
    fit = TokenFit()
    for _ in range(3000):
        t = random_tokens(r)
        fit.add(t, line(3.0, 0.0002, 0.02, t) + r.gauss(0.0, 0.5))
    assert fit.err == pytest.approx(0.5, rel=0.25)
    assert fit.predict(Tokens(1000, 500)) == pytest.approx(
        line(3.0, 0.0002, 0.02, Tokens(1000, 500)), abs=0.15
    )


def test_follows_a_worker_whose_speed_changes() -> None:
    r = random.Random(2)
    fit = TokenFit(forgetting=0.99)
    for _ in range(500):
        t = random_tokens(r)
        fit.add(t, line(0.3, 0.0002, 0.02, t))
    for _ in range(500):  # its decoding is now twice as slow
        t = random_tokens(r)
        fit.add(t, line(0.3, 0.0002, 0.04, t))
    assert fit.predict(Tokens(100, 1000)) == pytest.approx(
        line(0.3, 0.0002, 0.04, Tokens(100, 1000)), rel=0.01
    )
    still = TokenFit(forgetting=1.0)  # no forgetting: the old speed weighs as much as the new
    r = random.Random(2)
    for slow in (0.02, 0.04):
        for _ in range(500):
            t = random_tokens(r)
            still.add(t, line(0.3, 0.0002, slow, t))
    assert still.predict(Tokens(100, 1000)) < 0.9 * line(0.3, 0.0002, 0.04, Tokens(100, 1000))


def test_inputs_that_do_not_vary_neither_blow_up_nor_spoil_it() -> None:
    """Every task asks the same output for a long while: forgetting would grow the covariance
    without bound in that direction (windup); it stays capped, and the fit recovers."""
    r = random.Random(3)
    fit = TokenFit(forgetting=0.95)
    for _ in range(20_000):
        t = Tokens(r.randrange(1, 4000), 256)
        fit.add(t, line(0.3, 0.0002, 0.02, t))
    assert sum(fit.p[i][i] for i in range(3)) <= _TRACE_CAP * (1 + 1e-9)
    assert all(math.isfinite(v) for row in fit.p for v in row)
    for _ in range(200):
        t = random_tokens(r)
        fit.add(t, line(0.3, 0.0002, 0.02, t))
    assert fit.predict(Tokens(10, 1000)) == pytest.approx(
        line(0.3, 0.0002, 0.02, Tokens(10, 1000)), rel=1e-3
    )


def test_huge_and_zero_counts_stay_finite_and_predictions_never_negative() -> None:
    fit = TokenFit()
    for i in range(100):
        fit.add(Tokens(100_000_000 if i % 2 else 0, 0 if i % 3 else 100_000_000), 1e9 * (i % 2))
        fit.add(Tokens(0, 0), 0.0)
    assert all(math.isfinite(v) for v in fit.theta) and math.isfinite(fit.err)
    assert fit.predict(Tokens(0, 0)) >= 0.0 and fit.predict(Tokens(5, 5)) >= 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_a_run_time_that_is_not_one_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="run_s"):
        TokenFit().add(Tokens(1, 1), bad)
    with pytest.raises(ValueError, match="run_s"):
        Predictor().observe(A, "m", 10, wait_s=0, run_s=bad, now=0, tokens=Tokens(1, 1))


@pytest.mark.parametrize("counts", [(-1, 5), (5, -1), (10**9, 5), (True, 5), (1.5, 5)])
def test_token_counts_out_of_range_are_refused_by_name(counts: tuple[object, object]) -> None:
    with pytest.raises(ValueError, match="input_tokens|output_tokens"):
        Tokens(*counts)  # type: ignore[arg-type]


def test_the_predictor_uses_the_fit_once_it_rests_on_enough_tasks() -> None:
    p = Predictor()
    r = random.Random(4)
    asked = Tokens(500, 800)
    for i in range(MIN_FIT_SAMPLES):
        assert p.estimate(A, "m", 2000, tokens=asked).source != "fitted"
        t = random_tokens(r)
        p.observe(A, "m", 2000, wait_s=0.5, run_s=line(0.3, 0.0002, 0.02, t), now=i, tokens=t)
    e = p.estimate(A, "m", 2000, tokens=asked)
    assert e.source == "fitted" and e.samples == MIN_FIT_SAMPLES
    assert e.run_mean == pytest.approx(line(0.3, 0.0002, 0.02, asked), rel=1e-3)
    assert e.wait_mean == pytest.approx(0.5)  # the wait: as observed, by size
    # Without tokens, another model or another worker: as before, by size.
    assert p.estimate(A, "m", 2000).source == "observed"
    assert p.estimate(A, "other", 2000, tokens=asked).source == "worker"
    assert p.estimate(B, "m", 2000, tokens=asked).source == "default"
    # lookup_table mode answers from its table alone.
    p.set_mode("lookup_table")
    assert p.estimate(A, "m", 2000, tokens=asked).source == "table"


def test_fits_are_bounded_by_max_fits() -> None:
    p = Predictor(max_fits=6)
    for w in range(20):
        for i in range(MIN_FIT_SAMPLES):
            p.observe(bytes([w]) * 32, "m", 10, wait_s=0, run_s=1.0 + i, now=i, tokens=Tokens(i, i))
    assert len(p._fits) == 6
    assert p.estimate(bytes([19]) * 32, "m", 10, tokens=Tokens(3, 3)).source == "fitted"
    assert p.estimate(bytes([0]) * 32, "m", 10, tokens=Tokens(3, 3)).source != "fitted"


@pytest.mark.parametrize("seed", range(3))
def test_on_the_test_set_the_fit_beats_the_model_and_size_predictor(seed: int) -> None:
    scores = score(token_runs(seed))
    print(
        f"seed {seed}: rmse by size {scores.by_size:.3f} s, by tokens {scores.by_tokens:.3f} s "
        f"({scores.ratio:.1f}x smaller); {scores.within_2_err:.0%} within 2 errors"
    )
    assert scores.by_tokens * 5 < scores.by_size
    assert scores.by_tokens < 1.1 * scores.oracle  # within 10% of knowing every line
    assert 0.85 < scores.within_2_err  # the error it reports is about its real spread
