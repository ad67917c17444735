"""A worker's resource profile: GPU families, its wire form, and what a malformed or
oversized one is refused with."""

from __future__ import annotations

from typing import Any

import pytest

from p2psched.resources.profile import MAX_PROFILE_BYTES, Gpu, Profile, gpu_family
from p2psched.wire.codec import decode
from p2psched.wire.schema import SchemaError
from tests.harness.profiles import profile


def test_gpu_families() -> None:
    assert gpu_family("NVIDIA A100-SXM4-40GB") == gpu_family("a100") == "A100"
    assert gpu_family("NVIDIA GeForce RTX 4090") == gpu_family("RTX 4090") == "RTX4090"
    assert gpu_family("Tesla T4") == "T4"
    assert gpu_family("NVIDIA H100 80GB HBM3") == "H100"
    assert gpu_family("RTX-4090") == gpu_family("rtx 4090") == "RTX4090"
    assert gpu_family("NVIDIA RTX 6000 Ada Generation") == "RTX6000ADA"
    assert gpu_family("Quadro RTX 6000") == "RTX6000"
    assert gpu_family("NVIDIA GeForce RTX 3090 Ti") == "RTX3090TI" != gpu_family("RTX 3090")


def test_profile_round_trips_through_the_wire_in_the_meta_info_layout() -> None:
    p = profile(
        gpus=(Gpu("NVIDIA A100-SXM4-40GB", 40.0, "550.54.15"),),
        installed_models=("llama-3-8b", "sdxl"),
        loaded_models=("llama-3-8b",),
        download_mbps=900.0,
        upload_mbps=100.0,
        workload_gpu=0.5,
        min_price=0.01,
        drivers=("http", "command"),
        free_slots=1,
        labels=(("owner", "ana"), ("region", "eu")),
        addresses=("203.0.113.5:4000",),
    )
    wire = decode(p.encode())
    assert {
        "_v",
        "installed_models",
        "loaded_models",
        "specifications",
        "network",
        "workload",
        "min_cost",
    } <= set(wire)
    assert Profile.from_wire(wire) == p


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda w: w.update(_v=2), "profile._v"),
        (lambda w: w.update(extra=1), "profile"),
        (lambda w: w["specifications"].update(RAM="lots"), "profile.specifications.RAM"),
        (lambda w: w["workload"].update(GPU=1.5), "profile.workload.GPU"),
        (lambda w: w.update(min_cost=-1), "profile.min_cost"),
        (lambda w: w.update(installed_models=["x" * 200]), "profile.installed_models[0]"),
        (lambda w: w.update(loaded_models=["fake\nrow"]), "profile.loaded_models[0]"),
        (lambda w: w["specifications"].update(RAM=float("nan")), "profile.specifications.RAM"),
    ],
)
def test_a_malformed_profile_is_refused_naming_the_field(change: Any, field: str) -> None:
    wire = decode(profile().encode())
    change(wire)
    with pytest.raises(SchemaError) as e:
        Profile.from_wire(wire)
    assert e.value.path == field


def test_an_oversized_profile_is_refused_with_the_fix() -> None:
    big = profile(installed_models=tuple(f"model-{i}-" + "x" * 100 for i in range(40)))
    with pytest.raises(ValueError, match=f"over the {MAX_PROFILE_BYTES}-byte limit"):
        big.encode()
