"""The node's façade: all that its readers (the control API, its metrics and dashboard, the CLI)
see of a running node and may ask of it, as snapshots (`node.snapshots`) and commands.

Owns: where each snapshot is read from among the node's roles (DHT, scheduler, worker, gate),
and the refusals a command can meet, each a `Refusal` whose message says why and what to do.
Promises: a reader needs nothing of the node's insides; a snapshot is read on the trio thread
in one go, so it shows one moment; a refused command has changed nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from p2psched.node.model_requests import ModelRequests
from p2psched.node.node import Node
from p2psched.node.refusals import (
    Invalid,
    NotFound,
    OverPriceCap,
    Refusal,
    Unavailable,
    UnknownChoice,
)
from p2psched.node.snapshots import (
    CapacityCheck,
    DhtCounters,
    DrainState,
    Failure,
    GateStatus,
    JobAccepted,
    JobStatus,
    Ledger,
    NodeInfo,
    Peer,
    RelayCounters,
    ResultsPage,
    SchedulerCounters,
    SchedulerSettings,
    TaskHistory,
    TaskRecord,
    TaskResult,
    TaskView,
    WorkerAdView,
    WorkerCounters,
    WorkerRecord,
    WorkerWait,
)
from p2psched.resources.need import Need, NeedError
from p2psched.scheduler.ads import ad_json
from p2psched.scheduler.job import JobSpecError, parse_job
from p2psched.scheduler.jobs import SubmittedJob, to_json
from p2psched.scheduler.lifecycle import TaskState
from p2psched.scheduler.past_jobs import PastTasks, past_status
from p2psched.scheduler.predictor import MODES as PREDICT_MODES
from p2psched.scheduler.run import TaskRun
from p2psched.scheduler.strategy import STRATEGIES
from p2psched.scheduler.verifying import UnknownWorker
from p2psched.scheduler.worker_views import MAX_REASON
from p2psched.store import Store
from p2psched.wire.address import host_port
from p2psched.wire.codec import encode
from p2psched.wire.deal import task_id_for

# STRATEGIES and PREDICT_MODES are re-exported: what a reader may choose among, for its help;
# and to_json: how a reader shows an output it fetched (`task_output`) as the API shows others.
__all__ = [
    "PREDICT_MODES",
    "STRATEGIES",
    "Invalid",
    "NodeFacade",
    "NotFound",
    "OverPriceCap",
    "Refusal",
    "Unavailable",
    "UnknownChoice",
    "ledger_view",
    "to_json",
]

CONNECT_S = 10.0  # for a worker challenged by hand to be reached
BY_HAND_S = 15.0  # the most its product may take by its ad (a request waits for the verdict)
JOBS_SHOWN = 100  # jobs listed unless asked for more
JOBS_MAX = 1000
RESULTS_PAGE_MAX = 10_000
RESULTS_PAGE_BYTES = 8 << 20  # of outputs on one page, about (one larger comes alone)
FAILURES_MAX = 1000


def ledger_view(store: Store, verify: bool) -> dict[str, Any]:
    """A store's ledger summary; with `verify`, every entry re-checked (its `problems`)."""
    view = store.ledger_summary()
    if verify:
        view["problems"] = store.verify_ledger()
    return view


class NodeFacade(ModelRequests):
    """One running node as its readers see it (snapshots) and may drive it (commands)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    # -- the node, its peers and its gate ----------------------------------------------------

    def info(self) -> NodeInfo:
        node, worker = self._node, self._node.worker
        return NodeInfo(
            node_id=node.node_id.hex(),
            roles=node.roles,
            dht=host_port(*node.dht.address),
            channel=worker.address if worker else None,
            reachability=worker.reachability if worker else None,
            reachability_why=worker.why if worker else None,
            relay_moves=worker.relay.moves if worker and worker.relay else 0,
            routing_table=len(node.dht.protocol.routing),
            jobs=len(node.jobs.jobs),
        )

    def peers(self) -> list[Peer]:
        """The DHT nodes in its routing table, the most recently heard from first."""
        now = self._node.dht.now()
        seen = self._node.dht.protocol.routing.seen()
        return [
            Peer(
                node_id=c.node_id.hex(),
                address=host_port(c.host, c.port),
                last_seen_s=round(max(0.0, now - last), 1),
                failures=fails,
            )
            for c, last, fails in sorted(seen, key=lambda x: -x[1])
        ]

    def gate(self) -> GateStatus:
        if self._node.gate is None:
            raise NotFound("this node is not a gate (start one with p2psched gate)")
        return GateStatus.model_validate(self._node.gate.status())

    # -- jobs and tasks ------------------------------------------------------------------------

    def jobs(self, limit: int = JOBS_SHOWN, *, gateway: bool = False) -> list[JobStatus]:
        """Its running jobs, and the newest others (those run before it restarted too) up to
        `limit` in all: newest first. `gateway`: the OpenAI gateway's requests instead (which
        the others never list), running and the newest finished it keeps (`JobBook`'s bounds)."""
        if not 1 <= limit <= JOBS_MAX:
            raise Invalid(f"limit must be 1..{JOBS_MAX}")
        now = self._node.dht.now()
        live = [j for j in self._node.jobs.jobs.values() if j.ephemeral == gateway]
        shown = {j.job_id: j.status(now) for j in live if gateway or j.finished_at is None}
        for kept in [] if gateway else self._node.store.jobs(limit):  # (never has the gateway's)
            if len(shown) >= limit:
                break
            if kept.job not in shown:
                job = self._node.jobs.jobs.get(kept.job)
                shown[kept.job] = job.status(now) if job else past_status(kept, now)
        newest = sorted(shown.values(), key=lambda j: (-j["submitted_at"], j["job"]))
        return [JobStatus.model_validate(j) for j in (newest[:limit] if gateway else newest)]

    def job(self, job_id: str) -> JobStatus:
        now = self._node.dht.now()
        job = self._node.jobs.jobs.get(job_id)
        if job is not None:
            return JobStatus.model_validate(job.status(now))
        kept = self._node.store.job(job_id)
        if kept is None:
            raise _no_job(job_id)
        return JobStatus.model_validate(past_status(kept, now))

    def tasks(self, job_id: str, state: str | None = None) -> list[TaskView]:
        """A job's tasks, or those of them in `state`."""
        known = sorted(s.value for s in TaskState)
        if state is not None and state not in known:
            raise Invalid(f"unknown state {state!r}; known: {', '.join(known)}")
        job = self._node.jobs.jobs.get(job_id)
        if job is None:
            return [TaskView.model_validate(t) for t in self._past(job_id).tasks(state)]
        return [
            TaskView.model_validate(job.task_view(t))
            for t in job.run.tasks.values()
            if state is None or t.state.value == state
        ]

    def task_history(self, job_id: str, index: int) -> TaskHistory:
        """A task's every state transition, with its time and reason, from the node's store:
        of a job in memory, or of one the store keeps (run before this node restarted)."""
        task = task_id_for(job_id, index)
        job = self._node.jobs.jobs.get(job_id)
        if job is not None:
            t = job.run.tasks.get(task)
            if t is None:
                raise NotFound(f"job {job_id} has no task {index} (it has {len(job.run.tasks)})")
            state = t.state.value
        elif (found := self._node.store.task(job_id, task)) is not None:
            state = found[1].state
        elif self._node.store.has_job(job_id):
            raise NotFound(f"job {job_id} has no task {index}")
        else:
            raise _no_job(job_id)
        moves = self._node.store.transitions(job_id, task)
        return TaskHistory.model_validate({"task": task, "state": state, "transitions": moves})

    def results(self, job_id: str, after: int = 0, limit: int = 1000) -> ResultsPage:
        """A job's settled tasks in the order they settled, from the `after`-th on."""
        if after < 0 or not 1 <= limit <= RESULTS_PAGE_MAX:
            raise Invalid(f"after must be >= 0 and limit 1..{RESULTS_PAGE_MAX}")
        job = self._node.jobs.jobs.get(job_id)
        if job is None:
            views = self._past(job_id).settled(after, limit, RESULTS_PAGE_BYTES)
            page = [TaskResult.model_validate(view) for view in views]
            return ResultsPage(next=after + len(page), results=tuple(page))
        page = []
        size = 0  # of the outputs on the page, as MessagePack (JSON takes about as much)
        for task_id in job.settled[after : after + limit]:
            if page and size > RESULTS_PAGE_BYTES:
                break
            view = job.result_view(task_id)
            page.append(TaskResult.model_validate(view))
            if not view["output_spooled"]:
                size += len(encode(job.run.tasks[task_id].output))
        return ResultsPage(next=after + len(page), results=tuple(page))

    def task_output(self, job_id: str, index: int) -> bytes | Path:
        """A completed task's output as its receipt hashes it (MessagePack): the bytes, or
        the file that holds them (of a task run in copies, the copy its job kept)."""
        task_id = self._kept_as(job_id, task_id_for(job_id, index))
        kept = self._node.store.stored_output(job_id, task_id)
        if kept is None:
            raise NotFound(f"task {index} of job {job_id!r} has no output on this node")
        return kept

    def task(self, task_id: str) -> TaskRecord:
        """A task (`JOB/N`) of a job in memory, or else as the store keeps it."""
        job_id = task_id.rpartition("/")[0]
        job = self._node.jobs.jobs.get(job_id)
        t = job.run.tasks.get(task_id) if job is not None else None
        if job is not None and t is not None:
            state = job.run.group_state(task_id).value
            kept = job.run.kept(task_id) or t
            result = to_json(job.output(kept.spec.task_id)) if state == "completed" else t.error
            return TaskRecord(task_id, state, kept.placed_on, job.submitted_at, result)
        found = self._node.store.task(job_id, task_id)
        if found is None:
            raise NotFound(f"no task {task_id!r} on this node (a task id is JOB/N)")
        submitted, stored = found
        if stored.state != "completed" and (copy := self._node.store.kept_copy(job_id, task_id)):
            stored = copy  # run in copies: the one its job kept stands for it
        output = self._node.store.stored_value(job_id, stored.task)
        result = to_json(output) if stored.state == "completed" else stored.error
        return TaskRecord(task_id, stored.state, stored.worker, submitted, result)

    def _kept_as(self, job_id: str, task_id: str) -> str:
        """Whose output stands for `task_id`: its own, or (run in copies and not kept itself)
        the copy its job kept."""
        found = self._node.store.task(job_id, task_id)
        if found is not None and found[1].state != "completed":
            copy = self._node.store.kept_copy(job_id, task_id)
            if copy is not None:
                return copy.task
        return task_id

    def failures(self, limit: int = 50) -> list[Failure]:
        """The latest failures, newest first: each try that failed on a worker (with the
        worker and why), and tasks of this node's jobs that ended failed."""
        if not 1 <= limit <= FAILURES_MAX:
            raise Invalid(f"limit must be 1..{FAILURES_MAX}")
        d = self._node.jobs.dispatcher
        tried = [
            Failure(
                job=last.task.rpartition("/")[0],
                task=last.task,
                worker=worker.hex(),
                reason=last.reason,
                outcome=last.outcome,
                at=last.at,
            )
            for worker, last in d.views.recent_failures
        ]
        last_try = {f.task: f.reason for f in tried}  # (newest last: the last try's)
        ended = []
        for job_id, task_id, at in d.ended_failures:
            t = self._task_run(job_id, task_id)
            if t is None or _repeats(last_try.get(task_id), t.error):
                continue  # gone from memory, or the same failure as its last try: listed once
            ended.append(
                Failure(
                    job=job_id,
                    task=task_id,
                    worker=t.worker.hex() if t.worker else None,
                    reason=t.error,
                    outcome=t.state.value,
                    at=at,
                )
            )
        return sorted(tried + ended, key=lambda f: -f.at)[:limit]

    def ledger(self, verify: bool = False) -> Ledger:
        """Spent and earned, per job and per peer, from the signed commitments and receipts
        this node keeps; `verify` re-checks every entry's signature."""
        return Ledger.model_validate(ledger_view(self._node.store, verify))

    # -- the scheduler and the workers it knows -------------------------------------------------

    def scheduler(self) -> SchedulerSettings:
        d = self._node.jobs.dispatcher
        return SchedulerSettings(
            strategy=d.strategy.name,
            strategies=STRATEGIES,
            predict_mode=d.predictor.mode,
            predict_modes=PREDICT_MODES,
        )

    def queue(self, model: str | None = None, limit: int | None = None) -> list[WorkerWait]:
        """Per worker this node knows (the first `limit`), what the predictor expects of it for
        `model`; with a model, only the workers that serve it."""
        d = self._node.jobs.dispatcher
        now = d.clock()
        waits = []
        for worker in d.known_workers()[:limit]:
            record = self._record(worker, now)
            if model and not self._serves(worker, model, record, now):
                continue
            e = d.predictor.estimate(worker, model, 0)
            waits.append(
                WorkerWait(worker, model, e.wait_mean, e.wait_err, e.run_mean, e.source, record)
            )
        return waits

    async def workers(self, need: str = "") -> list[WorkerAdView]:
        """The ads of the live workers that match `need` (as `Need.parse` reads it), each with
        this node's record of its reputation (None: none)."""
        try:
            parsed = Need.parse(need)
        except NeedError as e:
            raise Invalid(f"need: {e}") from None
        ads = await self._node.discovery.find(parsed)
        now = self._node.dht.now()
        views = []
        for ad in ads:
            record = self._record(ad.node_id, now)
            reputation = None if record is None else record.reputation
            views.append(
                WorkerAdView.model_validate({**ad_json(ad, now), "reputation": reputation})
            )
        return views

    # -- counters, for the metrics ---------------------------------------------------------------

    def scheduler_counters(self) -> SchedulerCounters:
        jobs = list(self._node.jobs.jobs.values())
        running = [j for j in jobs if j.finished_at is None]
        counts: Counter[str] = Counter()
        for job in running:
            counts.update(job.run.counts())
        d = self._node.jobs.dispatcher
        return SchedulerCounters(
            jobs_running=len(running),
            jobs_done=len(jobs) - len(running),
            tasks={state.value: counts[state.value] for state in TaskState},
            queue_wait=d.stats.queue_wait.copy(),
            negotiation=Counter(d.stats.negotiation),
            outcomes=Counter(d.stats.outcomes),
            workers_connected=d.connected_workers,
            frame_budget_waits=d.frame_budget.waits,
            partials=Counter(d.stats.partials),
        )

    def dht_counters(self) -> DhtCounters:
        p = self._node.dht.protocol
        return DhtCounters(
            rpcs_sent=Counter(p.rpcs_sent),
            rpcs_received=Counter(p.rpcs_received),
            round_trips={kind: h.copy() for kind, h in p.round_trips.items()},
            events=Counter(p.stats),
            routing_contacts=len(p.routing),
            records=len(p.store),
            record_bytes=p.store.bytes_held,
        )

    def relay_counters(self) -> RelayCounters | None:
        """None: this node is not a gate."""
        if self._node.gate is None:
            return None
        relay = self._node.gate.relay
        up, pending = relay.circuits_open
        return RelayCounters(relay.reservations_held, up, pending, Counter(relay.counters))

    def worker_counters(self) -> WorkerCounters | None:
        """None: this node is not a worker."""
        role = self._node.worker
        if role is None:
            return None
        manager = role.service.manager
        unacked, unacked_bytes = manager.unacked
        return WorkerCounters(
            slots=manager.slots,
            free_slots=manager.free_slots,
            running=manager.running,
            tasks_held=manager.tasks_held,
            unacked=unacked,
            unacked_bytes=unacked_bytes,
            draining=manager.draining,
            completed=role.service.completed,
            run_seconds={driver: h.copy() for driver, h in manager.run_seconds.items()},
            relay_moves=role.relay.moves if role.relay is not None else None,
            connections_shed=role.service.doorkeeper.shed,
            frame_budget_waits=role.service.frame_budget.waits,
        )

    # -- commands ----------------------------------------------------------------------------------

    def submit(self, spec: dict[str, Any], source: str = "<api>") -> JobAccepted:
        """Accept a job from its spec (as job.yaml holds it); `source` names it in errors."""
        try:
            job = self._node.jobs.submit(parse_job(spec, source=source), spec)
        except JobSpecError as e:
            raise Invalid(str(e)) from None
        return JobAccepted(job=job.job_id, tasks=job.run.total)  # (a task's copies not counted)

    def cancel(self, job_id: str, tasks: list[str] | None = None) -> list[str]:
        """Cancel a job's tasks (None: all of them); the ids of those it aborted."""
        store = self._node.store
        job = self._node.jobs.jobs.get(job_id)
        if job is None and store.has_job(job_id):  # it ran before this node restarted
            unknown = [t for t in tasks or [] if store.task(job_id, t) is None]
            if unknown:
                raise NotFound(f"job {job_id} has no task {unknown[0]!r}")
            return []  # nothing of it runs: as for a job that ended
        if job is None:
            raise _no_job(job_id)
        unknown = [t for t in tasks or [] if t not in job.run.tasks]
        if unknown:
            raise NotFound(f"job {job_id} has no task {unknown[0]!r}")
        return self._node.jobs.cancel(job_id, tasks)

    def switch_strategy(self, name: str) -> None:
        """It applies at once to every job of this node."""
        try:
            self._node.jobs.dispatcher.strategy.set(name)
        except ValueError as e:
            raise UnknownChoice(str(e)) from None

    def switch_predictor(self, mode: str, table: Any = None) -> None:
        try:
            self._node.jobs.dispatcher.predictor.set_mode(mode, table)
        except ValueError as e:
            raise UnknownChoice(str(e)) from None

    async def challenge(self, worker: str, n: int | None, rows: int) -> CapacityCheck:
        """Challenge the capacity a worker's ad claims (`scheduler.challenge`): `n` None sizes
        the product from its ad. Its ad is looked up in the DHT if no job found it."""
        try:
            node_id = bytes.fromhex(worker)
        except ValueError:
            node_id = b""
        if len(node_id) != 32:
            raise Invalid(f"worker: expected a node id of 64 hex digits, not {worker[:80]!r}")
        d = self._node.jobs.dispatcher
        if node_id not in d.ads:
            d.saw(await self._node.discovery.find(Need.parse("")))
        try:
            v = await d.challenge(node_id, n=n, rows=rows, connect_s=CONNECT_S, most_s=BY_HAND_S)
        except UnknownWorker as e:
            raise NotFound(str(e)) from None
        except ValueError as e:
            raise Invalid(str(e)) from None
        return CapacityCheck(
            worker=worker.lower(),
            passed=v.passed,
            refused=v.refused,
            reason=v.reason,
            n=v.n,
            rounds=v.rounds,
            rows=v.rows,
            expected_s=v.expected_s,
            limit_s=v.limit_s,
            measured_s=v.measured_s,
            claimed_s=v.claimed_s,
            price=v.price if v.passed else 0.0,
        )

    def drain(self, on: bool = True) -> DrainState:
        """A draining worker finishes what it holds and takes nothing new (its quotes and
        commitments are declined with that reason), for maintenance or a clean leave."""
        if self._node.worker is None:
            raise Unavailable("this node is not a worker (start it with `p2psched worker join`)")
        manager = self._node.worker.service.manager
        manager.drain(on)
        return DrainState(draining=on, held=manager.tasks_held)

    # -- where things are ------------------------------------------------------------------------

    def _job(self, job_id: str) -> SubmittedJob:
        job = self._node.jobs.jobs.get(job_id)
        if job is None:
            raise _no_job(job_id)
        return job

    def _past(self, job_id: str) -> PastTasks:
        """The tasks of a job only the store keeps."""
        spec = self._node.store.job_spec(job_id)
        if spec is None:
            raise _no_job(job_id)
        return PastTasks(self._node.store, job_id, spec)

    def _task_run(self, job_id: str, task_id: str) -> TaskRun | None:
        job = self._node.jobs.jobs.get(job_id)
        return job.run.tasks.get(task_id) if job is not None else None

    def _record(self, worker: bytes, now: float) -> WorkerRecord | None:
        views = self._node.jobs.dispatcher.views
        return WorkerRecord.model_validate(views.view(worker, now)) if worker in views else None

    def _serves(self, worker: bytes, model: str, record: WorkerRecord | None, now: float) -> bool:
        """Whether its latest ad lists `model`, or this node saw it run that model."""
        ad = self._node.jobs.dispatcher.ads.get(worker)
        if ad is not None and ad.expires > now:
            return model in ad.profile.installed_models
        return record is not None and any(m.model == model for m in record.performance.models)


def _no_job(job_id: str) -> NotFound:
    return NotFound(f"no job {job_id!r} on this node")


def _repeats(last_try: str | None, error: str | None) -> bool:
    """Whether a task's final error only repeats its last try's reason (the task ends with the
    last worker's reason, and how many failed it so: see `TaskRun.why_workers_failed`)."""
    if last_try is None or error is None:
        return False
    return error[:MAX_REASON].startswith(last_try)
