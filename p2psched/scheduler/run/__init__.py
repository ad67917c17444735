"""One job's run on its scheduler, sans-I/O, in parts: the façade `JobRun` (events in,
actions out) over candidates, task moves, negotiation, late binding, rebalancing and reports;
links to workers and task moves each follow one table (`links`, `lifecycle`); the budget, the
receipt check and the stats are their own modules."""

from __future__ import annotations

from p2psched.scheduler.run.actions import Action as Action
from p2psched.scheduler.run.actions import Challenge as Challenge
from p2psched.scheduler.run.actions import Close as Close
from p2psched.scheduler.run.actions import Compare as Compare
from p2psched.scheduler.run.actions import Connect as Connect
from p2psched.scheduler.run.actions import Discover as Discover
from p2psched.scheduler.run.actions import Send as Send
from p2psched.scheduler.run.actions import Settled as Settled
from p2psched.scheduler.run.actions import Streamed as Streamed
from p2psched.scheduler.run.agreement import VerifyPolicy as VerifyPolicy
from p2psched.scheduler.run.budget import MONEY_EPSILON as MONEY_EPSILON
from p2psched.scheduler.run.config import DispatchConfig as DispatchConfig
from p2psched.scheduler.run.job import JobRun as JobRun
from p2psched.scheduler.run.links import Link as Link
from p2psched.scheduler.run.stats import DispatchStats as DispatchStats
from p2psched.scheduler.run.tasks import Spooled as Spooled
from p2psched.scheduler.run.tasks import TaskRun as TaskRun
from p2psched.scheduler.run.workers import WorkerState as WorkerState
from p2psched.wire.deal import job_of as job_of
from p2psched.wire.deal import task_id_for as task_id_for

__all__ = [
    "MONEY_EPSILON",
    "Action",
    "Challenge",
    "Close",
    "Compare",
    "Connect",
    "Discover",
    "DispatchConfig",
    "DispatchStats",
    "JobRun",
    "Link",
    "Send",
    "Settled",
    "Spooled",
    "Streamed",
    "TaskRun",
    "VerifyPolicy",
    "WorkerState",
    "job_of",
    "task_id_for",
]
