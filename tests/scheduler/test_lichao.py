"""The MTR envelope against brute force: random candidates and MTRs, churn, and crafted cases."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psched.scheduler.lichao import Line, LowerEnvelope, brute_force_best

INF = math.inf

# Spread over 10**-3 .. 10**6 with exact zeros and a few round values, so that equal prices,
# equal times and whole duplicates come up often.
spread = st.one_of(
    st.just(0.0),
    st.sampled_from([0.001, 0.5, 1.0, 2.0, 3.0, 10.0, 1e6]),
    st.floats(-3, 6).map(lambda e: 10.0**e),
    st.floats(0.0, 1e6),
)
# Every finite float >= 0, subnormals and near-overflow included: the exact paths.
any_value = st.floats(min_value=0.0, max_value=1.7e308)
mtrs = st.one_of(
    st.sampled_from([0.0, INF, 1.0]),
    st.floats(-3, 6).map(lambda e: 10.0**e),
    st.floats(min_value=0.0, allow_nan=False),  # includes inf and values whose costs overflow
)


def lines_of(values: st.SearchStrategy[float], max_size: int = 40) -> st.SearchStrategy[list[Line]]:
    pairs = st.lists(st.tuples(values, values), max_size=max_size)
    return pairs.map(lambda ps: [Line(p, t, key=i) for i, (p, t) in enumerate(ps)])


def cuts_of(lines: list[Line]) -> list[float]:
    """Where pairs of the lines cross, rounded: the MTRs most likely to catch a tie wrong."""
    out = []
    for a in lines[:8]:
        for b in lines[:8]:
            if a.time > b.time and b.price > a.price:
                out.append((b.price - a.price) / (a.time - b.time))
    return out


def exact_best(lines: list[Line], mtr: float) -> Line | None:
    """The tie rule spelled out with exact arithmetic only: the oracle for the oracle."""
    if not lines:
        return None
    if mtr == INF:
        return min(lines, key=lambda line: (line.time, line.price))  # the first of equals
    m = Fraction(mtr)
    return min(lines, key=lambda line: (Fraction(line.price) + m * Fraction(line.time), line.time))


def check(lines: list[Line], mtr: float, bucket_size: int) -> None:
    envelope = LowerEnvelope(lines, bucket_size=bucket_size)
    expected = exact_best(lines, mtr)
    assert brute_force_best(lines, mtr) is expected
    assert envelope.best(mtr) is expected


@settings(max_examples=300, deadline=None)
@given(lines_of(spread), st.data(), st.sampled_from([1, 2, 3, 64]))
def test_envelope_agrees_with_brute_force(
    lines: list[Line], data: st.DataObject, bucket: int
) -> None:
    for mtr in [0.0, INF, *data.draw(st.lists(mtrs, max_size=5)), *cuts_of(lines)]:
        check(lines, mtr, bucket)


@settings(max_examples=200, deadline=None)
@given(lines_of(any_value), st.data(), st.sampled_from([1, 2, 64]))
def test_envelope_agrees_over_the_whole_float_range(
    lines: list[Line], data: st.DataObject, bucket: int
) -> None:
    for mtr in [0.0, INF, *data.draw(st.lists(mtrs, max_size=5)), *cuts_of(lines)]:
        check(lines, mtr, bucket)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=6),
    st.lists(st.integers(0, 5), min_size=1, max_size=6),
    st.data(),
)
def test_small_integer_grids_with_many_exact_ties(
    prices: list[int], times: list[int], data: st.DataObject
) -> None:
    """Small integers make lines cross at rational MTRs, three or more through one point."""
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(prices), st.sampled_from(times))))
    lines = [Line(float(p), float(t), key=i) for i, (p, t) in enumerate(pairs)]
    grid = [
        0.0,
        0.25,
        0.5,
        1.0,
        1.5,
        2.0,
        3.0,
        4.0,
        5.0,
        INF,
        *[n / d for n in range(6) for d in (3, 7)],
    ]
    for mtr in grid:
        check(lines, mtr, data.draw(st.sampled_from([1, 2, 64])))


operation = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 20), spread, spread),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("best"), mtrs),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(operation, max_size=80), st.sampled_from([1, 2, 3, 64]))
def test_adds_and_removes_agree_with_brute_force(
    ops: list[tuple[object, ...]], bucket: int
) -> None:
    envelope = LowerEnvelope(bucket_size=bucket)
    model: dict[int, Line] = {}  # insertion order, a replaced key moving to the end
    for op in ops:
        if op[0] == "add":
            _, key, price, time = op
            assert isinstance(key, int) and isinstance(price, float) and isinstance(time, float)
            line = Line(price, time, key)
            envelope.add(line)
            model.pop(key, None)
            model[key] = line
        elif op[0] == "remove":
            key = op[1]
            assert isinstance(key, int)
            if key in model:
                envelope.remove(key)
                del model[key]
            else:
                with pytest.raises(KeyError):
                    envelope.remove(key)
        else:
            mtr = op[1]
            assert isinstance(mtr, float)
            assert envelope.best(mtr) is brute_force_best(list(model.values()), mtr)
        assert len(envelope) == len(model)
        assert list(envelope) == list(model.values())
    current = list(model.values())
    for mtr in [0.0, 0.01, 1.0, 100.0, INF, *cuts_of(current)]:
        assert envelope.best(mtr) is exact_best(current, mtr)


def test_the_winner_leaves_and_the_runner_up_takes_over() -> None:
    """The scheduler's pattern: the chosen worker fills up and is removed, then comes back."""
    # Forty on the envelope (price = 100 / time - 1 is convex), a hundred and sixty above it.
    lines = [Line(float(i), 100 / (i + 1), key=i) for i in range(40)]
    lines += [Line(float(i % 40) + 0.5, 100 / (i % 40 + 1), key=f"w{i}") for i in range(160)]
    envelope = LowerEnvelope(lines, bucket_size=4)
    pool = list(lines)
    for mtr in [0.0, 0.3, 1.0, 2.5, INF]:
        for _ in range(20):
            winner = envelope.best(mtr)
            assert winner is brute_force_best(pool, mtr)
            assert winner is not None
            envelope.remove(winner.key)
            pool.remove(winner)
        for line in lines:
            if line.key not in envelope:
                envelope.add(line)
                pool.append(line)
        assert envelope.best(mtr) is brute_force_best(pool, mtr)


def test_empty_envelope_answers_none() -> None:
    envelope = LowerEnvelope()
    assert len(envelope) == 0
    assert envelope.best(0.0) is None and envelope.best(1.0) is None and envelope.best(INF) is None
    assert brute_force_best([], 1.0) is None
    envelope.add(Line(1.0, 1.0, "a"))
    envelope.remove("a")
    assert envelope.best(1.0) is None and len(envelope) == 0


def test_cheapest_at_zero_fastest_at_infinity_middle_line_in_between() -> None:
    slow_cheap, fast_dear, middle = (
        Line(1.0, 10.0, "slow"),
        Line(5.0, 1.0, "fast"),
        Line(3.0, 3.0, "mid"),
    )
    envelope = LowerEnvelope([slow_cheap, fast_dear, middle])
    # middle beats slow_cheap past m = 2/7 and loses to fast_dear past m = 1 (tie at 1: faster).
    expected = {0.0: slow_cheap, 0.2: slow_cheap, 0.3: middle, 0.5: middle, 0.99: middle}
    expected |= {1.0: fast_dear, 2.0: fast_dear, 1e300: fast_dear, INF: fast_dear}
    for mtr, line in expected.items():
        assert envelope.best(mtr) is line, mtr
        assert brute_force_best([slow_cheap, fast_dear, middle], mtr) is line, mtr


def test_tie_rules() -> None:
    a, b = Line(2.0, 5.0, "a"), Line(2.0, 3.0, "b")  # same price: the faster at m = 0
    assert LowerEnvelope([a, b]).best(0.0) is b
    c, d = Line(4.0, 1.0, "c"), Line(3.0, 1.0, "d")  # same time: the cheaper at m = ∞
    assert LowerEnvelope([c, d]).best(INF) is d
    e, f = Line(0.0, 0.0, "e"), Line(0.0, 0.0, "f")  # the same line twice: the one added first
    assert LowerEnvelope([e, f]).best(INF) is e and LowerEnvelope([f, e]).best(1.0) is f
    # Three lines through (m = 2, cost 8): there the fastest wins, the middle one never does.
    lines = [Line(0.0, 4.0, 0), Line(2.0, 3.0, 1), Line(4.0, 2.0, 2)]
    envelope = LowerEnvelope(lines)
    assert [envelope.best(m).key for m in (1.99, 2.0, 2.01)] == [0, 2, 2]  # type: ignore[union-attr]
    assert [brute_force_best(lines, m).key for m in (1.99, 2.0, 2.01)] == [0, 2, 2]  # type: ignore[union-attr]


def test_costs_that_overflow_floats_are_still_compared_exactly() -> None:
    # At m = 1e300 both costs are inf as floats; exactly, 1e310 > 1e308 + 1e309.
    lines = [Line(0.0, 1e10, "slow"), Line(1e308, 1e9, "fast")]
    assert LowerEnvelope(lines).best(1e300) is lines[1]
    assert brute_force_best(lines, 1e300) is lines[1]
    # Free but slow against instant but dear: zero times and inf × 0 never meet.
    free, instant = Line(0.0, 1e6, "free"), Line(1e6, 0.0, "instant")
    assert LowerEnvelope([free, instant]).best(0.0) is free
    assert LowerEnvelope([free, instant]).best(INF) is instant


def test_replacing_a_key_updates_the_candidate() -> None:
    envelope = LowerEnvelope([Line(1.0, 10.0, "w"), Line(5.0, 5.0, "v")])
    envelope.add(Line(9.0, 10.0, "w"))  # w raised its price
    assert len(envelope) == 2
    assert envelope.best(0.0) == Line(5.0, 5.0, "v")
    assert [line.key for line in envelope] == ["v", "w"]


@pytest.mark.parametrize("price, time", [(-1.0, 1.0), (1.0, -0.5), (math.nan, 1.0), (1.0, INF)])
def test_a_line_must_be_finite_and_non_negative(price: float, time: float) -> None:
    with pytest.raises(ValueError, match="finite and >= 0"):
        Line(price, time, "w")


@pytest.mark.parametrize("mtr", [-1.0, -INF, math.nan])
def test_mtr_must_be_non_negative(mtr: float) -> None:
    with pytest.raises(ValueError, match="MTR must be >= 0"):
        LowerEnvelope([Line(1.0, 1.0, "w")]).best(mtr)
    with pytest.raises(ValueError, match="MTR must be >= 0"):
        brute_force_best([Line(1.0, 1.0, "w")], mtr)


def test_bucket_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bucket_size"):
        LowerEnvelope(bucket_size=0)
