"""What every part of a job's run shares: the state a `JobRun` holds (declared once here, set
by `JobRun.__init__`), and the few steps every part takes (dial a worker, look for more).

The parts are layered, each using only those below it: candidates, then task moves, then
negotiation, late binding, rebalancing and reports; `JobRun` sits on top and takes events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from random import Random

from p2psched.identity import Identity
from p2psched.resources.need import Need
from p2psched.scheduler.job import TaskSpec
from p2psched.scheduler.predictor import Predictor
from p2psched.scheduler.queue import TaskQueue
from p2psched.scheduler.run.actions import Action, Connect, Discover
from p2psched.scheduler.run.agreement import Group, VerifyPolicy
from p2psched.scheduler.run.budget import Budget
from p2psched.scheduler.run.config import DispatchConfig
from p2psched.scheduler.run.links import CONNECTING
from p2psched.scheduler.run.stats import DispatchStats
from p2psched.scheduler.run.tasks import Shape, TaskRun
from p2psched.scheduler.run.workers import WorkerState
from p2psched.scheduler.strategy import Candidate, Chooser, Strategy
from p2psched.scheduler.worker_views import WorkerViews
from p2psched.store.journal import Entry as JournalEntry


class RunBase:
    identity: Identity
    job: str
    mtr: float
    deadline: float | None  # when every task must be done, if the job says
    config: DispatchConfig
    stats: DispatchStats
    strategy: Strategy
    predictor: Predictor
    views: WorkerViews
    money: Budget
    tasks: dict[str, TaskRun]
    workers: dict[bytes, WorkerState]
    # What the shell must make durable before it carries out the actions of the same
    # step: a commitment is on record before it is sent, a result before it is acked.
    journal: list[JournalEntry]
    durable: bool  # keep a journal at all (a node with a store does)
    # ... of what it commits and pays only (the ledger's), not of its tasks' moves or outputs:
    # a job no restart takes up again (an OpenAI gateway request's, whose client waits on a
    # connection to this process)
    paid_only: bool
    # When the node's other jobs have a task due on a worker (their earliest latest
    # start, inf if none): a task of ours due later leaves that worker's room to them.
    rival: Callable[[str, WorkerState], float] | None
    started: float
    # -- verified results (`verification`): a task and its copies, by the task's id; each
    # copy's task id -> the task's; tasks whose end (their group's) is to be told the shell
    verify: VerifyPolicy
    groups: dict[str, Group]
    _group_of: dict[str, str]
    _announced: set[str]
    _rng: Random  # which results are sampled for a check
    _ending: bool  # tasks being ended on purpose: none asks for another copy
    _challenged_at: dict[bytes, float]  # when the shell was last asked to challenge a worker
    # Needs the last look in the DHT found no worker for, and why (the nearest misses):
    # said at once in the job's status, and in the error its tasks fail with.
    unmatched: dict[Need, str]
    # -- the queue (task moves keep these in step) --
    _queue: TaskQueue
    _queued: int
    _final: int  # tasks in a final state
    _shapes: Counter[Shape]  # queued, by kind
    _shape_spec: dict[Shape, TaskSpec]
    _shape_input: dict[Shape, int]  # the largest input (encoded) of a kind queued so far
    _timers: list[tuple[float, str]]  # (deadline, task id): stale once the task's moved on
    _next_sweep: float
    _ticked: float  # when `tick` last ran
    # Request ids: unique across the node's jobs when they share them, since one channel to
    # a worker carries them all and answers are routed back by id.
    _rids: Iterator[int]
    _out: list[Action]
    # -- candidates --
    _reserved: int  # late binding: places held in workers' queues, in all
    _by_price: list[WorkerState] | None
    # Workers that would take tasks now, and per kind of task a chooser over those that
    # serve it, kept current as quotes, room and links change (not rebuilt per round).
    _cands: dict[bytes, Candidate]
    _choosers: dict[Shape, Chooser]
    _choosing: str
    _asked: dict[bytes, TaskSpec]  # worker -> the kind of task its quote is for
    # Kinds of task waiting in workers' queues, for which quotes are sought even with
    # nothing queued here: a faster worker that turns up may take them (rebalancing).
    _seek: dict[Shape, TaskSpec]
    _seeking: int  # tasks waiting in workers' queues (as of the last sweep)
    # MTR 0, by kind of task: the least price among the workers that could take it (and
    # who that is), cleared when a worker comes, goes, declines or is skipped.
    _floors: dict[Shape, tuple[float, bytes]]
    _now: float  # of the commit round under way
    _granted: dict[bytes, int]  # rebalancing: tasks sent each worker's way
    _soonest: float  # rebalancing: the soonest any candidate would have a task done
    _next_rebalance: float
    _last_discover: float

    @property
    def spent(self) -> float:
        return self.money.spent

    @property
    def held(self) -> float:
        """Money held for tasks placed and not yet paid for."""
        return self.money.held

    @property
    def budget(self) -> float:
        return self.money.total

    def _pump(self, now: float) -> None:
        """Ask for quotes, commit what they allow (`JobRun`'s, the part on top)."""
        raise NotImplementedError

    def _dial(self, w: WorkerState) -> None:
        """Open a link to `w` at the addresses its ad gives (a redial due is then moot)."""
        w.relink(CONNECTING)
        w.redial_at = float("inf")
        self._out.append(Connect(w.ad.node_id, w.ad.profile.addresses))

    def _rediscover(self, now: float) -> None:
        """Ask the DHT for workers again, at most once every `rediscover_s`."""
        if self._last_discover + self.config.rediscover_s <= now:
            self._last_discover = now
            self._out.append(Discover())

    def _forget_reservations(self, w: WorkerState) -> None:
        self._reserved -= sum(w.reserved.values())
        w.reserved.clear()
