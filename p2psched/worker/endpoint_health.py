"""Which of the http driver's endpoints a worker may advertise the models of. Each endpoint of
its config is checked (`HttpDriver.check`: reached, and its model list or health path answered,
with its credentials) when the worker joins, before its ad goes out; one that fails is checked
again, less and less often (from `RECHECK_FIRST_S`, doubling, to `RECHECK_MOST_S`), until it
passes.

Promises: while an endpoint fails, the models it serves stay out of the ad (`withheld`) and
their tasks are refused with a reason (`refusal`); each failure is warned about in the log,
naming the endpoint, its URL and why, and never its credentials; a check is bounded in time
(`worker.health`), and so is how often an endpoint is asked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

import trio

from p2psched.worker.drivers import HttpDriver
from p2psched.worker.health import Unhealthy

_log = logging.getLogger(__name__)

RECHECK_FIRST_S = 15.0
RECHECK_MOST_S = 600.0


class EndpointHealth:
    """The endpoints of one http driver that failed their last check, and why."""

    def __init__(self, driver: HttpDriver) -> None:
        self._endpoints = driver
        self.failing: dict[str, str] = {}  # endpoint name -> why it failed

    def withheld(self, models: Iterable[str]) -> set[str]:
        """Those of `models` the http driver would send to a failing endpoint."""
        return {m for m in models if self._endpoints.endpoint_of(m) in self.failing}

    def refusal(self, model: str | None) -> str | None:
        """Why a task for `model` is refused now, if its endpoint fails: in words for the
        task's owner, who is not told where the server is."""
        if self._endpoints.endpoint_of(model) not in self.failing:
            return None
        asked = "a task without a model" if model is None else f"model {model[:64]!r}"
        return (
            f"this worker does not serve {asked} now: its model server failed its health "
            "check (the worker checks it again and advertises the model once it passes)"
        )

    async def check(self, names: Iterable[str], served: Iterable[str]) -> bool:
        """Check the endpoints `names` at once; whether any passed or failed anew. `served`:
        the models the worker would advertise, which a warning names."""
        was = dict(self.failing)
        models = tuple(served)

        async def one(name: str) -> None:
            try:
                await self._endpoints.check(name)
            except Unhealthy as e:
                self.failing[name] = str(e)
            else:
                if self.failing.pop(name, None) is not None:
                    _log.info(
                        "http endpoint %r (%s) passed its health check: its models are "
                        "advertised again",
                        name,
                        self._endpoints.url_of(name),
                    )

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        for name, why in self.failing.items():
            if was.get(name) != why:
                its = [m for m in models if self._endpoints.endpoint_of(m) == name]
                _log.warning(
                    "http endpoint %r (%s) failed its health check: %s; its models (%s) are "
                    "not advertised until it passes",
                    name,
                    self._endpoints.url_of(name),
                    why,
                    ", ".join(its) or "none of [worker] models",
                )
        return was.keys() != self.failing.keys()

    async def watch(
        self,
        served: Callable[[], Iterable[str]],
        changed: Callable[[], Awaitable[None]],
        *,
        first_s: float = RECHECK_FIRST_S,
        most_s: float = RECHECK_MOST_S,
    ) -> None:
        """Check the failing endpoints again until all pass, waiting `first_s`, then twice as
        long each time up to `most_s`; `changed()` after a check that changed which fail."""
        wait = first_s
        while self.failing:
            await trio.sleep(wait)
            wait = min(wait * 2, most_s)
            if await self.check(list(self.failing), served()):
                await changed()
