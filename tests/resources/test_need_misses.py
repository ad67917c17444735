"""Why a worker misses a need, clause by clause and by how much, and the nearest misses among
the workers found, as a user reads them when no worker matches."""

from __future__ import annotations

from p2psched.resources.need import Need, nearest_misses
from p2psched.resources.profile import Gpu, Profile


def _profile(**kw: object) -> Profile:
    base: dict[str, object] = {"cpu_model": "cpu", "cpu_cores": 4, "ram_gb": 8.0}
    return Profile(**{**base, **kw})  # type: ignore[arg-type]


def test_each_failing_clause_says_what_the_worker_has_and_by_how_much() -> None:
    p = _profile(
        min_price=0.01,
        drivers=("echo",),
        gpus=(Gpu("NVIDIA GeForce RTX 4090", 24.0),),
        labels=(("region", "us"),),
    )
    need = Need.parse("gpu=A100,vram>=40,ram>=16,cpus>=2,driver=http,model=m,label.region=eu")
    assert need.misses(p) == [
        "has RTX4090, not gpu=A100",
        "has vram=24, not vram>=40 (16 short)",
        "has ram=8, not ram>=16 (8 short)",
        "does not enable driver=http",
        "has no model=m",
        "has label.region=us, not label.region=eu",
    ]
    assert Need.parse("max_price<=0.001").misses(p) == ["asks 0.01 > max_price 0.001"]
    assert Need.parse("label.owner=ana").misses(p) == ["has no label.owner"]
    assert Need.parse("driver=echo,cpus>=2").misses(p) == []


def test_the_nearest_misses_name_the_capability_searched_and_the_closest_worker() -> None:
    need = Need.parse("driver=command,max_price<=0.001")
    dear = _profile(min_price=0.05, drivers=("command",))
    near = _profile(min_price=0.01, drivers=("command",))
    assert nearest_misses(need, [dear]) == (
        "1 worker has driver=command but asks 0.05 > max_price 0.001"
    )
    assert nearest_misses(need, [dear, near]) == (
        "2 workers have driver=command but the nearest asks 0.01 > max_price 0.001"
    )
    assert nearest_misses(Need.parse("gpu=H100"), []) == "no worker advertises gpu=H100"
    assert nearest_misses(Need.parse("cpus>=64"), []) == "no worker found"
    # Workers that miss in different ways are grouped, those that miss least first.
    small = _profile(min_price=0.0)
    assert nearest_misses(Need.parse("cpus>=8,ram>=16"), [small, _profile(cpu_cores=8)]) == (
        "1 worker found but has ram=8, not ram>=16 (8 short), "
        "1 worker found but has cpus=4, not cpus>=8 (4 short); has ram=8, not ram>=16 (8 short)"
    )
