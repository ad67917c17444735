"""Choosing the worker for a money-time ratio (MTR): the lower envelope of the candidates' lines.

Owns: `Line` (a candidate whose cost is price + MTR × time), `LowerEnvelope` (the envelope, kept
up to date as candidates come and go) and `brute_force_best` (the linear scan it must agree with).
Promises: for every MTR m in [0, ∞], `envelope.best(m) == brute_force_best(envelope, m)`.

Where it is used: for answers across MTRs (the best worker for any MTR at once), as
bench/quality.py measures it. A running job does not use it: its MTR is fixed, so its
`strategy.Chooser` keeps the candidates in a heap keyed by that MTR's score, which answers the
same question at a heap's cost per change.

The winner at m is the first line under one total order: the smaller cost, computed exactly (the
float inputs taken as the rationals they are, never a rounded sum), then the smaller time, then
the smaller price, then the line added first (its position in the iterable, for the scan). So
m = 0 picks the cheapest (ties: the faster) and m = ∞ the fastest (ties: the cheaper), and m = ∞
is decided by that rule directly, since inf × 0 has no cost. Exact comparison is what lets two
different algorithms agree on every input: with rounded sums two lines an ulp apart at a huge m,
or three lines through one point, would be ordered by rounding noise.

Why not a Li-Chao tree proper: it needs a finite, discretised domain and compares rounded costs
at its nodes, and it cannot forget a line. Here each leaf of a balanced tree holds a bucket of up
to `bucket_size` lines and every node keeps the envelope of the lines below it (the envelope of
two envelopes is the envelope of their merge), so the root holds the whole envelope on [0, ∞):
lines with strictly falling time and strictly rising price, each winning on [cut before, cut
after). A query is a binary search over the cuts as floats, each the correctly rounded exact
cut, so only an m equal to a rounded cut needs an exact look.

Costs. `best` is O(log h) for an envelope of h lines (h ≤ N; a few dozen for 100,000 random
candidates). `add` and `remove` only mark a leaf (removing a line that is not on its leaf's
envelope marks nothing); the next `best` pays for the changes: O(B log B) per marked bucket of B
lines, then the envelopes on the path to the root, up to the first that comes out unchanged,
O(Σ envelope sizes along the path): O(log² N) for random candidates, O(N) at worst, when every
line is on the envelope. Removing the winner and adding another costs about 0.2 ms at 100,000
candidates (bench/lichao.py). Building from N lines is O(N log B) plus the merges, paid by the
first `best`. The tree keeps the size it had at its largest; emptied buckets are refilled first.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise


@dataclass(frozen=True, slots=True)
class Line:
    """A candidate: at MTR m it costs `price + m × time`. `key` names it (e.g. a worker id)."""

    price: float
    time: float
    key: Hashable

    def __post_init__(self) -> None:
        for name, value in (("price", self.price), ("time", self.time)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"candidate {self.key!r}: {name} must be finite and >= 0, got {value!r}"
                )


# (-time, price, insertion number, line): tuples sort in envelope order (slowest first, then
# cheapest, then oldest) and never reach the line, whose key need not be comparable.
_Entry = tuple[float, float, int, Line]

# A float cost is within a factor (1 ± 2.000001u) of the exact one, plus 2**-1074 when m × time
# falls below the normal range; anything within (1 + 8u) of the least float cost, plus a subnormal
# margin, may still be the exact least and is settled exactly.
_SCREEN = 1.0 + 2.0**-50
_SCREEN_FLOOR = 2.0**-1060


def _check_mtr(mtr: float) -> None:
    if not mtr >= 0:  # also refuses NaN
        raise ValueError(f"MTR must be >= 0 (math.inf for 'fastest'), got {mtr!r}")


def brute_force_best(lines: Iterable[Line], mtr: float) -> Line | None:
    """The best line at `mtr` by scanning them all: O(N). None when there are no lines.

    Float costs first, then exact ones for the lines within rounding of the least: about 1.2×
    the time of a plain `min` over float costs.
    """
    _check_mtr(mtr)
    pool = lines if isinstance(lines, Sequence) else list(lines)
    if not pool:
        return None
    if mtr == math.inf:
        return min(pool, key=lambda line: (line.time, line.price))  # min keeps the first of equals
    costs = [line.price + mtr * line.time for line in pool]
    limit = min(costs) * _SCREEN + _SCREEN_FLOOR
    near = [i for i, cost in enumerate(costs) if cost <= limit]
    if len(near) == 1:
        return pool[near[0]]
    m = Fraction(mtr)

    def exact(i: int) -> tuple[Fraction, float, float, int]:
        line = pool[i]
        return Fraction(line.price) + m * Fraction(line.time), line.time, line.price, i

    return pool[min(near, key=exact)]


def _middle_loses(a: _Entry, b: _Entry, c: _Entry) -> bool:
    """Whether b never wins next to a and c, given time a > b > c and price a < b < c.

    b loses when a and c cross at or before a and b do (at the same point c wins the tie, being
    faster): (pc - pa)(ta - tb) <= (pb - pa)(ta - tc). Decided in floats when the two sides are
    clearly apart, exactly otherwise; every difference is positive, so the floats carry only
    relative error (about 3u a side) and a subnormal remainder, well inside the margin.
    """
    ta, pa, tb, pb, tc, pc = -a[0], a[1], -b[0], b[1], -c[0], c[1]
    left = (pc - pa) * (ta - tb)
    right = (pb - pa) * (ta - tc)
    margin = (left + right) * 1e-15 + 1e-300
    if left - right > margin:
        return False
    if right - left > margin:
        return True
    # Too close to call, or over/underflowed (then margin or the difference is inf or NaN).
    fa, fb, fc = Fraction(pa), Fraction(pb), Fraction(pc)
    sa, sb, sc = Fraction(ta), Fraction(tb), Fraction(tc)
    return (fc - fa) * (sa - sb) <= (fb - fa) * (sa - sc)


def _envelope(entries: list[_Entry]) -> list[_Entry]:
    """The entries (sorted) that win somewhere on [0, ∞), in the order they win as m grows."""
    hull: list[_Entry] = []
    for entry in entries:
        if hull:
            if hull[-1][0] == entry[0]:
                continue  # same time: the entry before it is no dearer and was added earlier
            while hull and hull[-1][1] >= entry[1]:
                hull.pop()  # faster and no dearer, so never worse at any m >= 0
            while len(hull) >= 2 and _middle_loses(hull[-2], hull[-1], entry):
                hull.pop()
        hull.append(entry)
    return hull


def _cut(a: _Entry, b: _Entry) -> tuple[float, Fraction]:
    """Where b (faster, dearer) starts to win over a: exactly, and correctly rounded to a float."""
    exact = (Fraction(b[1]) - Fraction(a[1])) / (Fraction(-a[0]) - Fraction(-b[0]))
    try:
        return float(exact), exact  # int / int division, so correctly rounded
    except OverflowError:
        return math.inf, exact


class LowerEnvelope:
    """The candidates, answering the best one for an MTR; see the module's notes for costs."""

    __slots__ = (
        "_bucket_size",
        "_entries",
        "_bucket_of",
        "_buckets",
        "_open",
        "_leaves",
        "_hulls",
        "_dirty",
        "_added",
        "_winners",
        "_cuts",
        "_exact_cuts",
        "_cut_cache",
    )

    def __init__(self, lines: Iterable[Line] = (), *, bucket_size: int = 64) -> None:
        """`bucket_size` lines per leaf: larger builds faster, smaller redoes less per change."""
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {bucket_size!r}")
        self._bucket_size = bucket_size
        self._entries: dict[Hashable, _Entry] = {}  # in insertion order, the last tie-break
        self._bucket_of: dict[Hashable, int] = {}
        self._buckets: list[dict[Hashable, _Entry]] = []
        self._open: set[int] = set()  # buckets with room
        self._leaves = 1  # a power of two >= len(self._buckets); node i has children 2i, 2i+1
        self._hulls: list[list[_Entry]] = [[], []]  # per node; root 1, leaf b at _leaves + b
        self._dirty: set[int] = set()  # buckets whose envelopes (and their ancestors') are stale
        self._added = 0
        self._winners: list[Line] = []  # the root's envelope
        self._cuts: list[float] = []  # _cuts[i]: where _winners[i + 1] starts to win, rounded
        self._exact_cuts: list[Fraction] = []
        self._cut_cache: dict[tuple[int, int], tuple[float, Fraction]] = {}
        for line in lines:
            self.add(line)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Line]:
        """The lines in insertion order, the order `brute_force_best` breaks full ties by."""
        return (entry[3] for entry in self._entries.values())

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, line: Line) -> None:
        """Add a candidate. One whose key is present is replaced, and counts as added last."""
        entry: _Entry = (-line.time, line.price, self._added, line)
        self._added += 1
        bucket = self._bucket_of.get(line.key)
        if bucket is None:
            bucket = self._open_bucket()
            self._bucket_of[line.key] = bucket
        else:
            del self._entries[line.key]  # so it moves to the end of the insertion order
        self._entries[line.key] = entry
        lines = self._buckets[bucket]
        lines[line.key] = entry
        if len(lines) >= self._bucket_size:
            self._open.discard(bucket)
        self._dirty.add(bucket)

    def remove(self, key: Hashable) -> None:
        """Remove the candidate named `key` (KeyError if absent)."""
        bucket = self._bucket_of.pop(key)
        entry = self._entries.pop(key)
        del self._buckets[bucket][key]
        self._open.add(bucket)
        # A line off its bucket's envelope is off every envelope above it: nothing changes.
        if bucket in self._dirty or entry in self._hulls[self._leaves + bucket]:
            self._dirty.add(bucket)

    def best(self, mtr: float) -> Line | None:
        """The candidate of least `price + mtr × time` (tie rule in the module notes), or None."""
        _check_mtr(mtr)
        self._refresh()
        if not self._winners:
            return None
        if mtr == math.inf:
            return self._winners[-1]
        cuts = self._cuts
        i = bisect_right(cuts, mtr)
        if i and cuts[i - 1] == mtr:
            # A float cut equal to mtr may stand for an exact cut just above it.
            i = bisect_left(cuts, mtr)
            while i < len(cuts) and cuts[i] == mtr and self._exact_cuts[i] <= mtr:
                i += 1
        return self._winners[i]

    def _open_bucket(self) -> int:
        if self._open:
            return next(iter(self._open))
        bucket = len(self._buckets)
        self._buckets.append({})
        self._open.add(bucket)
        if bucket == self._leaves and bucket:
            # Out of leaves: double them; every node moves, so all envelopes are recomputed.
            self._leaves *= 2
            self._hulls = [[] for _ in range(2 * self._leaves)]
            self._dirty.update(range(len(self._buckets)))
        return bucket

    def _refresh(self) -> None:
        if not self._dirty:
            return
        hulls, leaves = self._hulls, self._leaves
        # A node whose envelope came out unchanged leaves its parent as it was: a line added
        # above its bucket's envelope costs one bucket, not a path.
        level: set[int] = set()
        for bucket in self._dirty:
            node = leaves + bucket
            hull = _envelope(sorted(self._buckets[bucket].values()))
            if hull != hulls[node]:
                hulls[node] = hull
                level.add(node >> 1)
        self._dirty.clear()
        level.discard(0)  # a single leaf is the root
        while level:
            parents: set[int] = set()
            for node in level:
                hull = _envelope(sorted(hulls[2 * node] + hulls[2 * node + 1]))
                if hull != hulls[node]:
                    hulls[node] = hull
                    parents.add(node >> 1)
            parents.discard(0)
            level = parents
        root = hulls[1]
        cache: dict[tuple[int, int], tuple[float, Fraction]] = {}
        for a, b in pairwise(root):
            pair = (a[2], b[2])  # an insertion number names one (price, time) for good
            cache[pair] = self._cut_cache.get(pair) or _cut(a, b)
        self._cut_cache = cache
        self._winners = [entry[3] for entry in root]
        self._cuts = [rounded for rounded, _ in cache.values()]
        self._exact_cuts = [exact for _, exact in cache.values()]
