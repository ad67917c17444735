"""Resource profiles, needs, capability keys, and detection on recorded NVML answers."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from p2psched.resources.detect import detect, detect_gpus
from p2psched.resources.need import Need, NeedError, capability_keys
from p2psched.resources.profile import MAX_PROFILE_BYTES, Gpu, Profile, gpu_family
from p2psched.wire.codec import decode
from p2psched.wire.schema import SchemaError
from tests.harness.profiles import NEEDS, profile, random_profile

DATA = Path(__file__).parent / "data"


class NVMLError(Exception):
    pass


class RecordedNvml:
    """Replays recorded NVML answers through pynvml's function names."""

    def __init__(
        self,
        recording: dict[str, Any] | None,
        *,
        fail_init: str | None = None,
        fail_at: int | None = None,
    ) -> None:
        self.rec = recording or {}
        self.fail_init = fail_init
        self.fail_at = fail_at
        self.shut_down = False

    def _out(self, value: str) -> str | bytes:
        return value.encode() if self.rec.get("bytes") else value

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError(self.fail_init)

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self._out(self.rec["nvmlSystemGetDriverVersion"])

    def nvmlDeviceGetCount(self) -> int:
        return len(self.rec["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index == self.fail_at:
            raise NVMLError("GPU is lost")
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return self._out(self.rec["devices"][handle]["nvmlDeviceGetName"])

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=self.rec["devices"][handle]["nvmlDeviceGetMemoryInfo.total"])


def recording(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())  # type: ignore[no-any-return]


def test_gpus_from_recorded_nvml_answers() -> None:
    nvml = RecordedNvml(recording("nvml_dgx_a100.json"))
    gpus, note = detect_gpus(nvml)
    assert gpus == (Gpu("NVIDIA A100-SXM4-40GB", 40.0, "550.54.15"),) * 2
    assert note is None and nvml.shut_down
    (gpu,), _ = detect_gpus(RecordedNvml(recording("nvml_rtx4090_bytes.json")))
    assert gpu == Gpu("NVIDIA GeForce RTX 4090", 24.0, "535.129.03")
    assert gpu.family == "RTX4090"


def test_no_driver_or_a_failing_gpu_means_no_gpus_and_a_note() -> None:
    gpus, note = detect_gpus(RecordedNvml(None, fail_init="NVML Shared Library Not Found"))
    assert gpus == () and note is not None and "Shared Library Not Found" in note
    nvml = RecordedNvml(recording("nvml_dgx_a100.json"), fail_at=1)
    gpus, note = detect_gpus(nvml)
    assert gpus == () and note is not None and "GPU is lost" in note and nvml.shut_down


def test_detect_reads_this_machine_without_failing(tmp_path: Path) -> None:
    found = detect(tmp_path, nvml=RecordedNvml(None, fail_init="Driver Not Loaded"))
    assert found.cpu_cores == os.cpu_count()
    assert found.ram_gb > 0 and found.disk_gb > 0
    assert found.gpus == () and "Driver Not Loaded" in found.notes[0]
    assert 0 <= found.workload_ram <= 1


def test_detect_reads_proc_files(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n")
    (proc / "meminfo").write_text("MemTotal:       16777216 kB\nMemAvailable:    4194304 kB\n")
    found = detect(tmp_path, nvml=RecordedNvml(recording("nvml_dgx_a100.json")), proc=proc)
    assert found.cpu_model == "Test CPU 9000"
    assert found.ram_gb == 16.0 and found.workload_ram == 0.75
    assert len(found.gpus) == 2


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


def test_need_parsing_and_its_errors() -> None:
    need = Need.parse(
        "gpu=A100, vram>=40,ram>=16,model=llama-3-8b,driver=http,max_price<=0.02,label.region=eu"
    )
    assert (
        str(need)
        == "gpu=A100,vram>=40,ram>=16,model=llama-3-8b,driver=http,max_price<=0.02,label.region=eu"
    )
    assert Need.parse("").clauses == ()
    for bad, says in [
        ("vram>=lots", "takes a number"),
        ("colour=red", "unknown field 'colour'"),
        ("gpu>=A100", "only be compared with '='"),
        ("vram", "is not FIELD OP VALUE"),
    ]:
        with pytest.raises(NeedError, match=says):
            Need.parse(bad)


def test_every_matching_worker_is_stored_under_its_needs_search_keys() -> None:
    """The promise discovery rests on: search the need's keys, filter, and nobody is missed."""
    rng = random.Random(7)
    workers = [(os.urandom(32), random_profile(rng)) for _ in range(500)]
    for text in NEEDS:
        need = Need.parse(text)
        capability, search = need.search_keys()
        matching = [(i, p) for i, p in workers if need.matches(p)]
        for node_id, p in matching:
            stored = capability_keys(p, node_id)
            assert stored[capability] in search
        # And the filter is exact: brute force agrees.
        assert len(matching) == sum(
            1 for _, p in workers if all(Need((c,)).matches(p) for c in need.clauses)
        )


def test_the_most_selective_capability_is_searched() -> None:
    assert Need.parse("ram>=16,gpu=A100,model=sdxl").search_keys()[0] == "model:sdxl"
    assert Need.parse("vram>=40,gpu=a100").search_keys()[0] == "gpu:A100"
    assert Need.parse("driver=http").search_keys()[0] == "driver:http"
    assert Need.parse("ram>=16").search_keys()[0] == "any"
    capability, keys = Need.parse("").search_keys()
    assert capability == "any" and len(set(keys)) == 16
