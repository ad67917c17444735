"""How a scheduler picks a worker for a task among those that can take it now: the strategies,
each a choice over `Candidate`s, switchable while the node runs.

Owns: the strategy names and their rules.
- `cost` (default): least `price + MTR × expected time` (MTR = ∞: fastest, MTR = 0: cheapest),
  O(log N) a choice from a heap keyed by that score (see `Chooser`: a job's MTR is fixed, so
  the heap answers what the Li-Chao envelope of `lichao` would, at a heap's cost per change).
- `shortest_queue`: least expected wait before the task would start; then the cheaper.
- `round_robin`: the candidates in turn, by node id, the next after the last one used.
- `weighted`: smooth weighted round robin (nginx's), weight = slots ÷ expected run time, so a
  worker twice as fast gets twice the tasks, evenly interleaved.
- `probabilistic`: a random pick, with probability proportional to that same weight.
- `late_binding`: Sparrow's batch sampling with late binding. It is not a pick among quotes:
  the job reserves places in d·m workers' queues for m tasks, and a task goes to whichever
  worker asks for one first (see `run.late`); the rest of the reservations are cancelled.
Promises: a choice is always one of the candidates that `ok` accepts, or None when none does;
the same inputs and seed give the same choices.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

COST = "cost"
LATE_BINDING = "late_binding"
STRATEGIES = (COST, "shortest_queue", "round_robin", "weighted", "probabilistic", LATE_BINDING)
PROBE_RATIO = 2  # late binding: reservations per task (Sparrow's d)


def check_strategy(name: str) -> str:
    """`name` if it is a strategy, else ValueError naming the valid ones."""
    if name not in STRATEGIES:
        raise ValueError(
            f"no scheduling strategy {name[:64]!r}; the strategies are: {', '.join(STRATEGIES)}"
        )
    return name


@dataclass(slots=True, eq=False)
class Candidate:
    """A worker that would take tasks now, as the scheduler sees it this round."""

    worker: bytes  # its node id
    price: float  # per task
    wait: float  # expected seconds before a task sent now would start
    run: float  # expected seconds a task runs there
    slots: int  # tasks it runs at once (≥ 1)
    room: int  # tasks it would still take under its quote
    ahead: int = 0  # tasks placed on it this round, queued behind `wait`

    @property
    def start(self) -> float:
        """Expected seconds until the next task placed there starts: each `slots` tasks
        placed ahead of it push it back by one run time."""
        return self.wait + self.run * (self.ahead // self.slots)

    @property
    def time(self) -> float:
        """Expected seconds until the next task placed there is done."""
        return self.start + self.run

    @property
    def weight(self) -> float:
        return self.slots / max(self.run, 1e-3)


Ok = Callable[[Candidate], bool]


class Chooser:
    """Choices among one set of candidates (one kind of task), kept up to date as they change:
    `put` a candidate whose quote, room or queue changed, `discard` one that can take no more.

    `cost` and `shortest_queue` rank by a key (`cost`: price + MTR × expected time, then
    time, then price; MTR = ∞: time, then price), kept in a heap with lazy deletion: a change
    is a push, a choice a look at the top, both O(log N). The MTR is the job's, fixed, so
    this answers exactly what the lower envelope (`lichao.LowerEnvelope`) answers for that
    MTR, at a heap's cost per change instead of an envelope's; the envelope is for queries
    across MTRs. The others go over the candidates in turn or draw among them: O(N)."""

    def __init__(self, strategy: Strategy, mtr: float) -> None:
        self.strategy = strategy
        self.mtr = mtr
        self.name = strategy.name  # what it was built for; a switch builds a new one
        # Ordered, with O(1) membership and removal.
        self.candidates: dict[Candidate, int] = {}  # -> version of its heap entry
        self._heap: list[tuple[tuple[float, ...], int, int, Candidate]] = []
        self._pushed = 0

    def put(self, c: Candidate) -> None:
        if c.room <= 0:
            self.discard(c)
            return
        self._pushed += 1
        self.candidates[c] = self._pushed
        if self.name in _RANKED:
            heapq.heappush(self._heap, (self._key(c), self._pushed, self._pushed, c))
            if len(self._heap) > 4 * len(self.candidates) + 64:  # mostly stale: compact
                self._heap = [e for e in self._heap if self.candidates.get(e[3]) == e[2]]
                heapq.heapify(self._heap)

    def discard(self, c: Candidate) -> None:
        self.candidates.pop(c, None)  # its heap entries go stale

    def took(self, c: Candidate) -> None:
        """A task was placed on `c` (for callers that keep no other record of it)."""
        c.room -= 1
        c.ahead += 1
        self.put(c)

    def pick(self, ok: Ok) -> Candidate | None:
        s = self.strategy
        live = self.candidates
        if self.name in _RANKED:
            return self._best(ok)
        if self.name == "probabilistic":
            return s.sample([c for c in live if ok(c)])
        # round_robin, weighted (late binding places tasks in turn where it binds)
        return s.next_in_turn(list(live), ok)

    def fastest(self, ok: Ok) -> Candidate | None:
        """The candidate `ok` accepts that would have a task done first (then the cheaper):
        a scan, for when no one can meet a deadline."""
        return min(
            (c for c in self.candidates if ok(c)), key=lambda c: (c.time, c.price), default=None
        )

    def _key(self, c: Candidate) -> tuple[float, ...]:
        if self.name == "shortest_queue":
            return (c.start, c.price)
        if math.isinf(self.mtr):
            return (c.time, c.price)
        return (c.price + self.mtr * c.time, c.time, c.price)

    def _best(self, ok: Ok) -> Candidate | None:
        heap, live = self._heap, self.candidates
        while heap and live.get(heap[0][3]) != heap[0][2]:
            heapq.heappop(heap)  # stale: changed or gone since
        if not heap:
            return None
        c = heap[0][3]
        if ok(c):
            return c
        # The best is not for this task (it excludes that worker, or the budget is short):
        # the same order over those that are, by a scan. Rare: retries and a budget's end.
        return min((c for c in live if ok(c)), key=lambda c: (self._key(c), live[c]), default=None)


_RANKED = (COST, "shortest_queue")


class Strategy:
    """The node's current strategy, and the state the turn-taking ones keep between rounds."""

    def __init__(self, name: str = COST, *, seed: int | None = None) -> None:
        self.name = check_strategy(name)
        self.rng = random.Random(seed)
        self._last: bytes = b""  # round robin: the node id used last
        self._current: dict[bytes, float] = {}  # weighted: each worker's running credit

    def set(self, name: str) -> None:
        self.name = check_strategy(name)

    def chooser(self, candidates: Sequence[Candidate], mtr: float) -> Chooser:
        chooser = Chooser(self, mtr)
        for c in candidates:
            chooser.put(c)
        return chooser

    def next_in_turn(self, live: Sequence[Candidate], ok: Ok) -> Candidate | None:
        usable = [c for c in live if ok(c)]
        if not usable:
            return None
        if self.name == "weighted":
            # Smooth weighted round robin: everyone earns its weight, the richest is picked
            # and pays the total; over sum(weights) picks each gets its share, interleaved.
            total = 0.0
            best: Candidate | None = None
            for c in usable:
                credit = self._current.get(c.worker, 0.0) + c.weight
                self._current[c.worker] = credit
                total += c.weight
                if best is None or credit > self._current[best.worker]:
                    best = c
            assert best is not None
            self._current[best.worker] -= total
            if len(self._current) > 4 * len(usable) + 1024:  # workers come and go
                keep = {c.worker for c in usable}
                self._current = {k: v for k, v in self._current.items() if k in keep}
            return best
        after = [c for c in usable if c.worker > self._last]
        chosen = min(after or usable, key=lambda c: c.worker)
        self._last = chosen.worker
        return chosen

    def sample(self, usable: Sequence[Candidate]) -> Candidate | None:
        if not usable:
            return None
        weights = [c.weight for c in usable]
        if not all(math.isfinite(w) for w in weights):
            return self.rng.choice(list(usable))
        return self.rng.choices(list(usable), weights=weights)[0]
