"""Standing quotes: a worker's latest quote to one of this node's paid-only jobs (an OpenAI
gateway request's), which the next paid-only job of the same kind adopts, so that a stream of
such requests asks each worker for a quote once in a while, not once per request.

Owns: the quotes kept, by worker and kind of task, and until when each stands.
Promises: a quote stands only if the job it came to took it (that job checked its signature,
its scheduler and its job), no longer than that job would have used it, and no more once its
worker rejected a commitment or its link ended; a job adopts it only if it is paid-only and
of that kind (`JobRun.adopt_quote`). Each job still sends its own signed commitment and
verifies its own receipt: a standing quote saves a round trip, not a check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from p2psched.scheduler.run import JobRun
from p2psched.scheduler.run.tasks import Shape, shape_of
from p2psched.wire.deal import Quote

# A paid-only job's kind of task: its shape (driver, model, need, max price) and priority.
Kind = tuple[Shape, int]


@dataclass(frozen=True, slots=True)
class _Standing:
    quote: Quote
    until: float  # as the job it came to would have used it, at most


def kind_of(run: JobRun) -> Kind | None:
    """The kind of task of a paid-only job whose tasks are all of one kind (the gateway's have
    one); None for any other job, whose quotes stand for no one."""
    if not run.paid_only:
        return None
    kinds = {(shape_of(t.spec), t.spec.priority) for t in run.tasks.values()}
    return next(iter(kinds)) if len(kinds) == 1 else None


class StandingQuotes:
    def __init__(self) -> None:
        self._kept: dict[tuple[bytes, Kind], _Standing] = {}

    def adopt(self, run: JobRun, now: float, others: Iterable[JobRun] = ()) -> None:
        """Hand `run` the quotes that stand for its kind from the workers it knows; when it
        knows more than one, not those of workers holding a task of the node's `others` (its
        running jobs): such a quote's wait was said before that task came, and would mislead
        the choice between them (a fresh quote tells the wait behind it)."""
        kind = kind_of(run)
        if kind is None:
            return
        others = [o for o in others if o is not run] if len(run.workers) > 1 else []
        for worker in list(run.workers):
            standing = self._kept.get((worker, kind))
            if standing is None or _holds_any(worker, others):
                continue
            if standing.until <= now:
                del self._kept[worker, kind]
                continue
            run.adopt_quote(worker, standing.quote, standing.until, now)

    def keep(self, run: JobRun, worker: bytes, quote: Quote) -> None:
        """`quote` from `worker` was delivered to `run`: if `run` took it, it stands."""
        kind = kind_of(run)
        w = run.workers.get(worker)
        if kind is not None and w is not None and w.quote is quote:
            self._kept[worker, kind] = _Standing(quote, w.quote_until)

    def drop(self, worker: bytes) -> None:
        """`worker` rejected a commitment, or its link ended: its quotes stand no more."""
        for key in [k for k in self._kept if k[0] == worker]:
            del self._kept[key]


def _holds_any(worker: bytes, runs: Iterable[JobRun]) -> bool:
    """Whether `worker` holds a task of any of `runs`."""
    return any((w := run.workers.get(worker)) is not None and w.holding for run in runs)
