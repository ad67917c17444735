"""Workers' resource profiles for tests: one with defaults (`profile`), random ones
(`random_profile`), and needs that cover every kind of clause (`NEEDS`)."""

from __future__ import annotations

import random
from typing import Any

from p2psched.resources.profile import Gpu, Profile


def profile(**kw: Any) -> Profile:
    """A worker's profile: an 8-core, 32 GB machine unless `kw` says otherwise."""
    base: dict[str, Any] = {"cpu_model": "Test CPU", "cpu_cores": 8, "ram_gb": 32.0}
    return Profile(**(base | kw))


def random_profile(rng: random.Random) -> Profile:
    """A profile drawn by `rng` from a few GPUs, models, drivers, prices and regions."""
    gpu_models = [
        "NVIDIA A100-SXM4-40GB",
        "NVIDIA H100 80GB HBM3",
        "NVIDIA GeForce RTX 4090",
        "Tesla T4",
    ]
    vram = {
        "NVIDIA A100-SXM4-40GB": 40.0,
        "NVIDIA H100 80GB HBM3": 80.0,
        "NVIDIA GeForce RTX 4090": 24.0,
        "Tesla T4": 16.0,
    }
    models = ["llama-3-8b", "llama-3-70b", "sdxl", "whisper"]
    gpus = tuple(Gpu(m, vram[m], "550") for m in rng.sample(gpu_models, rng.randrange(0, 3)))
    installed = tuple(rng.sample(models, rng.randrange(0, 4)))
    return profile(
        gpus=gpus,
        ram_gb=float(rng.choice([8, 16, 32, 64, 128])),
        installed_models=installed,
        loaded_models=tuple(m for m in installed if rng.random() < 0.5),
        drivers=tuple(rng.sample(["http", "command", "echo"], rng.randrange(1, 3))),
        min_price=rng.choice([0.0, 0.01, 0.02, 0.05]),
        free_slots=rng.randrange(0, 3),
        labels=(("region", rng.choice(["eu", "us"])),),
    )


NEEDS = [
    "",
    "gpu=A100",
    "gpu=RTX 4090,vram>=24",
    "vram>=40",
    "ram>=64,driver=http",
    "model=llama-3-8b,max_price<=0.02",
    "loaded=sdxl",
    "gpus>=2,label.region=eu",
    "driver=command,slots>=1",
]
