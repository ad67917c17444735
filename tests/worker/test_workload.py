"""The ad's live load: sampled while the worker runs and republished when it moves past the
threshold, paced as the ad is. On trio's fake clock in a real DHT swarm (a scheduler reads
the ad back), and through a real worker on a recorded four-GPU machine whose GPUs get busy
and whose model server loads another model, as a scheduler's `workers` shows it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psched.dht.swarm import open_swarm
from p2psched.node.status import NodeFacade
from p2psched.resources.detect import Load, detect
from p2psched.resources.need import Need
from p2psched.resources.profile import Profile
from p2psched.scheduler.discovery import Discovery
from p2psched.worker.advert import Advert
from p2psched.worker.config import (
    ConfigError,
    HttpDriverConfig,
    WorkerConfig,
    WorkloadSettings,
    load_config,
)
from p2psched.worker.workload import Sample, follow_load
from tests.harness.http_server import JsonHandler, serving
from tests.harness.network import network
from tests.harness.nvml import RecordedNvml, recording

PROFILE = Profile("Test CPU", 4, 8.0, drivers=("echo",), free_slots=1)


async def test_a_load_past_the_threshold_is_republished_and_bursts_are_paced(
    autojump_clock: trio.abc.Clock,
) -> None:
    # What the GPUs do, by second: idle, a little busy (under the 0.1 threshold), then busy,
    # then flapping every second between two loads far apart.
    def gpu_at(t: float) -> float:
        if t < 10:
            return 0.0
        if t < 20:
            return 0.05
        if t < 30:
            return 0.5
        return 0.9 if int(t) % 2 else 0.1

    async def sample() -> Sample:
        return Sample(Load(0.0, 0.0, gpu_at(trio.current_time() - start), 0.0))

    async with open_swarm(8) as swarm:
        node = swarm[1].node
        published: list[tuple[float, float]] = []  # (when, the ad's GPU load)
        put = node.put

        async def counted_put(key: bytes, value: bytes, **kw: Any) -> int:
            published.append((trio.current_time() - start, advert_gpu()))
            return await put(key, value, **kw)

        node.put = counted_put  # type: ignore[method-assign]
        advert = Advert(node, PROFILE, min_interval=5.0)

        def advert_gpu() -> float:
            return advert.profile.workload_gpu

        start = trio.current_time()
        await advert.publish()
        discovery = Discovery(swarm[0].node, cache_for=0)
        keys = len(published)  # one put per capability key, per publish

        async with trio.open_nursery() as nursery:
            settings = WorkloadSettings(interval_s=1.0, threshold=0.1)
            await nursery.start(follow_load, advert, sample, settings)
            await trio.sleep(20)
            assert len(published) == keys  # 0.05 moved less than the threshold: not published

            await trio.sleep(2)  # at 20 s the GPUs got busy: published within a sample
            assert len(published) == 2 * keys
            [ad] = await discovery.find(Need())
            assert ad.profile.workload_gpu == 0.5

            await trio.sleep(28)  # 30..50 s: a change every second
            nursery.cancel_scope.cancel()
    flapping = sorted({t for t, _ in published if t > 30})
    assert 3 <= len(flapping) <= 5  # every change moved past the threshold: at most one per 5 s
    assert all(b - a >= 5 for a, b in zip(flapping, flapping[1:], strict=False))


class ModelServer(JsonHandler):
    """A model server whose `GET /v1/models` lists what `loaded` holds now."""

    loaded: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        listed = [{"id": m, "object": "model"} for m in self.loaded]
        self.send_json(
            200 if self.path == "/v1/models" else 404, {"object": "list", "data": listed}
        )


@contextmanager
def model_server(loaded: list[str]) -> Iterator[str]:
    ModelServer.loaded = loaded
    with serving(ModelServer) as url:
        yield url + "/v1"


async def test_a_scheduler_sees_a_workers_gpus_get_busy_and_a_model_load(tmp_path: Path) -> None:
    nvml = RecordedNvml(recording("nvml_4x_l4.json"))
    machine = detect(tmp_path, nvml=nvml)
    loaded = ["llama"]
    with model_server(loaded) as url:
        config = WorkerConfig(
            drivers=("http",),
            models=("llama", "qwen"),
            http_driver=HttpDriverConfig(endpoints={"llama": url, "qwen": url}),
            workload=WorkloadSettings(interval_s=0.2),
        )
        async with network(tmp_path, [config], detected=machine, nvml=nvml) as (scheduler, _):
            scheduler.discovery.cache_for = 0  # (a scheduler reads an ad again after 30 s)
            view = NodeFacade(scheduler)

            async def seen() -> Any:
                while True:
                    ads = await view.workers()
                    if ads:
                        return ads[0]
                    await trio.sleep(0.2)

            with trio.fail_after(60):
                while (ad := await seen()).loaded_models != ("llama",):
                    await trio.sleep(0.2)  # what its server lists is what is loaded
            assert ad.workload.gpu == 0.0 and ad.workload.vram == 0.011

            nvml.busy(90, 0.5)
            loaded.append("qwen")
            with trio.fail_after(60):
                while (ad := await seen()).workload.gpu != 0.9:
                    await trio.sleep(0.2)
            assert ad.workload.vram == 0.5
            assert ad.loaded_models == ("llama", "qwen")
            assert 0 <= ad.workload.cpu <= 1 and 0 < ad.workload.ram <= 1


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("interval_s = 0", r"\[workload\] interval_s: must be 0.1..3600 seconds, not 0"),
        ("threshold = 1.5", r"\[workload\] threshold: must be a fraction of capacity, 0..1"),
        ("every = 3", r"\[workload\] every: unknown field; known: interval_s, threshold"),
    ],
)
def test_the_workload_table_refuses_what_it_cannot_follow(
    tmp_path: Path, table: str, says: str
) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(f"[workload]\n{table}\n")
    with pytest.raises(ConfigError, match=says):
        load_config(path)
    path.write_text("[workload]\ninterval_s = 2.5\nthreshold = 0\n")
    assert load_config(path).workload == WorkloadSettings(interval_s=2.5, threshold=0.0)


async def test_a_model_withheld_for_its_failing_health_check_is_not_sampled_back_into_the_ad(
    tmp_path: Path,
) -> None:
    nvml = RecordedNvml(recording("nvml_4x_l4.json"))
    machine = detect(tmp_path, nvml=nvml)
    with model_server(["llama", "qwen"]) as url:
        # llama's server lists it, but its health path fails (a server still loading, say):
        # the worker withholds llama until it passes; qwen's endpoint is healthy.
        sick = {"url": url, "health_path": "/health"}
        config = WorkerConfig(
            drivers=("http",),
            models=("llama", "qwen"),
            http_driver=HttpDriverConfig(endpoints={"llama": sick, "qwen": url}),
            workload=WorkloadSettings(interval_s=0.2),
        )
        async with network(tmp_path, [config], detected=machine, nvml=nvml) as (scheduler, _):
            scheduler.discovery.cache_for = 0
            view = NodeFacade(scheduler)

            async def seen() -> Any:
                while not (ads := await view.workers()):
                    await trio.sleep(0.2)
                return ads[0]

            with trio.fail_after(60):
                while "qwen" not in (ad := await seen()).loaded_models:
                    await trio.sleep(0.2)
            # Its load moves: a sample is published, with the models loaded then.
            nvml.busy(90, 0.5)
            with trio.fail_after(60):
                while (ad := await seen()).workload.gpu != 0.9:
                    await trio.sleep(0.2)
    assert "llama" not in ad.models and "llama" not in ad.loaded_models, ad
