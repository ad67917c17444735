"""The live part of a worker's ad: how busy it is (CPU, RAM, its GPUs' utilization and memory
in use) and which models are loaded, sampled while it runs and republished when they move.

Owns: the sampler (`follow_load`, a trio service), its settings (`[workload]` in the worker's
config), and the decision, pure and sans-I/O, of what a sample changes in the ad
(`changes`): a load that moved by `threshold` or more from what the ad says, or a different
set of loaded models. Promises: a sample that changes nothing past the threshold publishes
nothing; what it does change goes out through `Advert.amend`, so bursts are paced as every
change of the ad is (at most one publish per `Advert.min_interval`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio

from p2psched.resources.detect import Load
from p2psched.resources.profile import Profile
from p2psched.worker.advert import Advert
from p2psched.worker.config import ANY_MODEL, WorkerConfig, WorkloadSettings
from p2psched.worker.instances import InstanceError, listed_models
from p2psched.worker.model_http import origin


@dataclass(frozen=True, slots=True)
class Sample:
    load: Load
    loaded_models: tuple[str, ...] | None = None  # None: not known (the ad's stand)


def changes(published: Profile, sample: Sample, threshold: float) -> dict[str, Any]:
    """The fields of the ad `sample` changes, or nothing if it moved no load by `threshold`
    or more from `published` and loads no other models. Measured from what was published,
    not the last sample: a slow drift is republished once it adds up."""
    load = {
        "workload_cpu": sample.load.cpu,
        "workload_ram": sample.load.ram,
        "workload_gpu": sample.load.gpu,
        "workload_vram": sample.load.vram,
    }
    moved = any(abs(getattr(published, k) - v) >= threshold for k, v in load.items())
    models = sample.loaded_models
    if models is not None and set(models) != set(published.loaded_models):
        return {**load, "loaded_models": models}
    return load if moved else {}


async def follow_load(
    advert: Advert,
    sample: Callable[[], Awaitable[Sample]],
    settings: WorkloadSettings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sample every `settings.interval_s` (the first at once) and republish what moved."""
    task_status.started()
    while True:
        found = changes(advert.profile, await sample(), settings.threshold)
        if found:
            await advert.amend(**found)
        await trio.sleep(settings.interval_s)


def models_url(endpoint: str) -> str:
    """Where the server of an http endpoint lists its models: under its OpenAI base URL (the
    path up to /v1), else at the root's /v1/models."""
    path = urlsplit(endpoint).path
    base = path[: path.index("/v1") + 3] if "/v1" in path else "/v1"
    return origin(endpoint) + base + "/models"


async def loaded_models(
    config: WorkerConfig, installed: tuple[str, ...], routes: Mapping[str, str]
) -> tuple[str, ...]:
    """Of the `installed` models, those loaded now: a model the http driver serves (through a
    registered instance's `routes`, or the config's endpoints) if its server lists it in
    `GET /v1/models` (one that does not answer lists nothing); any other, if the config says
    it is loaded."""
    endpoints = config.http_driver.endpoints
    asked: dict[str, tuple[str, ...]] = {}  # models URL -> what it listed
    loaded = []
    for model in installed:
        route = routes.get(model)
        endpoint = None if route else endpoints.get(model) or endpoints.get(ANY_MODEL)
        if route is None and endpoint is None:
            if model in config.loaded_models:
                loaded.append(model)
            continue
        # A config's endpoint is asked with its credentials; a registered instance takes none.
        if endpoint is not None:
            url, headers = models_url(endpoint.url), endpoint.headers
        else:
            assert route is not None
            url, headers = models_url(route), None
        if url not in asked:
            try:
                asked[url] = await listed_models(url, headers=headers)
            except InstanceError:
                asked[url] = ()
        if model in asked[url]:
            loaded.append(model)
    return tuple(loaded)
