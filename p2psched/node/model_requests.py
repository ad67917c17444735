"""The façade's commands that run a task for a model (the OpenAI gateway's requests, the design
documents' /queue/submit and /api/v1/tasks): what a task for the model needs and may pay, as the
node's config says, and the one-task jobs that carry them.

Owns: each model's price cap (its [models.NAME] max_price, else [server] max_price) and the
refusal of a request no worker serves within it. Promises: no such task commits to a worker
asking more than its cap; a request refused so names the cap and the cheapest ask seen.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from p2psched.node.config import ModelTable, model_job
from p2psched.node.node import Node
from p2psched.node.refusals import Invalid, NotFound, OverPriceCap
from p2psched.node.snapshots import ServedModel, TaskOutcome, TaskRecord
from p2psched.resources.need import Need
from p2psched.scheduler.job import JobSpecError, derive_tasks, parse_job
from p2psched.scheduler.jobs import to_json
from p2psched.scheduler.lifecycle import TaskState

# A model task's streamed parts waiting for its client, at most (its parts in all are bounded
# by the scheduler's caps on a task's partial results; these, by how far a client may lag).
MAX_WAITING_PARTS = 4096


class ModelRequests:
    """The façade's model tasks (a mixin of `NodeFacade`, over the node it holds)."""

    _node: Node

    if TYPE_CHECKING:

        def task(self, task_id: str) -> TaskRecord: ...  # (NodeFacade's)

    async def submit_task(
        self,
        model: str,
        task_input: dict[str, Any],
        driver: str,
        wait_s: float,
        *,
        job_id: str | None = None,
        fresh: bool = False,
        name: str | None = None,
        priority: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> TaskRecord:
        """Submit one task for `model` (the design documents' queue submission), placed as a
        job's are; answers once a worker was chosen, or `wait_s` passed (then with none).
        `job_id`: the job's id, if the caller made one (unique); `fresh`: find its workers
        in the DHT, not in what discovery read last (which may be 30 s old). `name`: the
        job's (made a job name: other characters become "-"); `priority`: its, 0..9;
        `metadata`: what it tells the predictor, as a job's task's."""
        wants = self.model_requirements(model)
        spec = model_job(wants, "queue", model, driver, task_input, name, metadata)
        spec |= _capped(self.price_cap(model))
        if priority is not None:
            spec["priority"] = priority
        try:
            parsed = parse_job(spec, source="queue/submit")
        except JobSpecError as e:
            raise Invalid(str(e)) from None
        need = derive_tasks(parsed)[0].need
        discovery = self._node.discovery
        found = await discovery.find(need, fresh=fresh)
        if not found and not fresh:  # a worker may have begun to serve it since the last read
            found = await discovery.find(need, fresh=True)
        if not found:
            await self._check_price_cap(model, need)
            raise NotFound(f"no worker in the network serves model {model!r} ({need})")
        job = self._node.jobs.submit(parsed, spec, job_id=job_id)
        task = next(iter(job.run.tasks.values()))
        with trio.move_on_after(wait_s):
            while task.worker is None and not task.state.final:
                await trio.sleep(0.05)
        return self.task(task.spec.task_id)

    def model_requirements(self, model: str) -> ModelTable | None:
        """What a task for `model` needs and its limits, as the node's config says (None: it
        says nothing of the model)."""
        return self._node.models.get(model)

    def price_cap(self, model: str) -> float:
        """The most a task for `model` may pay a worker: its [models.NAME] max_price, else
        the node's [server] max_price (math.inf: no cap)."""
        wants = self.model_requirements(model)
        if wants is not None and wants.max_price is not None:
            return wants.max_price
        return self._node.max_price

    async def _check_price_cap(self, model: str, need: Need) -> None:
        """Refuse a task for `model` that found no worker under `need` when workers with all
        else it needs are there, but ask more than its price cap (naming the cheapest)."""
        others = Need(tuple(c for c in need.clauses if c.field != "max_price"))
        if others == need:
            return
        asks = [ad.profile.min_price for ad in await self._node.discovery.find(others)]
        if asks:
            cap = self.price_cap(model)
            raise OverPriceCap(
                f"no worker serves model {model!r} within its price cap of {cap:g} a task "
                f"([models.{model}] max_price, else [server] max_price): the cheapest of "
                f"{len(asks)} asks {min(asks):g}"
            )

    async def served_models(self) -> list[ServedModel]:
        """The models the live workers with the http driver advertise (installed or loaded),
        by name, each with how many of them serve it."""
        ads = await self._node.discovery.find(Need.parse("driver=http"))
        served: Counter[str] = Counter()
        for ad in ads:
            served.update(set(ad.profile.installed_models) | set(ad.profile.loaded_models))
        return [ServedModel(model, n) for model, n in sorted(served.items())]

    @asynccontextmanager
    async def model_task(
        self, model: str, task_input: dict[str, Any], *, timeout_s: float, retries: int
    ) -> AsyncIterator[tuple[trio.MemoryReceiveChannel[Any], Callable[[], TaskOutcome]]]:
        """Run `task_input` as a one-task job on a worker whose http driver serves `model`,
        placed as a job's tasks are. Yields the task's partial results as they come (a
        streamed answer's chunks; the channel ends once the task is final), and what tells
        how it ended (or stands). At most `MAX_WAITING_PARTS` wait in the channel: one more
        ends it at once, the task not final, its outcome's error saying why (the node holds no
        more of a task than that for a client that reads slowly). A task not final when the
        block ends is cancelled: its asker is gone."""
        wants = self.model_requirements(model)
        spec = model_job(wants, "model", model, "http", task_input)
        spec.update(timeout=timeout_s, retries=retries, **_capped(self.price_cap(model)))
        try:
            parsed = parse_job(spec, source="model task")
        except JobSpecError as e:
            raise Invalid(str(e)) from None
        # Workers the discovery cache holds for it, if any: a request saves the DHT's round
        # trips (the job looks there itself once they cannot take it).
        need = derive_tasks(parsed)[0].need
        found = await self._node.discovery.find(need)
        if not found:  # workers serve it (the gateway asked): with all it needs, in its cap?
            found = await self._node.discovery.find(need, fresh=True)
            if not found:
                await self._check_price_cap(model, need)
            if not found and wants is not None:
                raise NotFound(f"no worker in the network has what model {model!r} needs ({need})")
        send, receive = trio.open_memory_channel[Any](MAX_WAITING_PARTS)
        job = self._node.jobs.submit(parsed, spec, found=found, ephemeral=True)
        task_id = next(iter(job.run.tasks))
        t = job.run.tasks[task_id]
        cut: list[str] = []  # why the channel was ended before the task was final

        def passed(part: Any) -> None:
            if cut:
                return
            try:
                send.send_nowait(part)
            except trio.WouldBlock:
                cut.append(f"its client read too slowly: {MAX_WAITING_PARTS} parts waited")
                send.close()

        def outcome() -> TaskOutcome:
            output = to_json(job.output(task_id)) if t.state == TaskState.COMPLETED else None
            error = cut[0] if cut and not t.state.final else t.error
            return TaskOutcome(task_id, t.state.value, output, error, t.attempts, t.state.final)

        with self._node.jobs.dispatcher.watch(task_id, passed, send.close):
            try:
                yield receive, outcome
            finally:
                if not t.state.final:
                    self._node.jobs.cancel(job.job_id, None)


def _capped(cap: float) -> dict[str, Any]:
    """A job spec's budget for tasks that may pay at most `cap` each (none: no cap)."""
    return {"budget": {"max_price_per_task": cap}} if math.isfinite(cap) else {}
