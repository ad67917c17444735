"""Fixed-bucket histograms: a value on a bound counts in that bound."""

from __future__ import annotations

import math

import pytest

from p2psched.histogram import Histogram


def test_a_histogram_counts_a_value_on_a_bound_in_that_bound() -> None:
    h = Histogram((0.1, 1.0))
    for x in (0.05, 0.1, 0.5, 1.0, 7.0, math.nan):
        h.observe(x)
    assert h.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]  # NaN is not a duration
    assert h.count == 5 and h.sum == pytest.approx(8.65)
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 0.5))
