"""Detection of what a machine has: GPUs from recorded NVML answers (data/), failures that
leave a note, and the CPU and memory read from /proc."""

from __future__ import annotations

import os
from pathlib import Path

from p2psched.resources.detect import Device, detect, detect_gpus, sample_load
from p2psched.resources.profile import Gpu
from tests.harness.nvml import RecordedNvml, recording


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


def test_each_gpu_is_a_device_by_its_uuid_and_minor_number(tmp_path: Path) -> None:
    found = detect(tmp_path, nvml=RecordedNvml(recording("nvml_4x_l4.json")))
    assert [d.index for d in found.devices] == [0, 1, 2, 3]
    assert found.devices[1] == Device(1, "GPU-a93e7d14-2c6b-4f08-b5d2-7e8f9a0b1c21", 1)
    assert len({d.uuid for d in found.devices}) == 4
    (device,) = detect(tmp_path, nvml=RecordedNvml(recording("nvml_rtx4090_bytes.json"))).devices
    assert device.uuid == "GPU-3e9a1d4c-5f6b-7c8d-0e1f-2a3b4c5d6e7f"  # from bytes


def test_the_load_sampled_is_the_gpus_utilization_and_memory_in_use() -> None:
    nvml = RecordedNvml(recording("nvml_4x_l4.json"))
    idle = sample_load(nvml=nvml)
    assert idle.gpu == 0.0 and idle.vram == 0.011  # 256 MiB of 22.5 GiB each
    nvml.rec["devices"][0]["nvmlDeviceGetUtilizationRates.gpu"] = 80
    nvml.rec["devices"][0]["nvmlDeviceGetMemoryInfo.used"] = 24152899584
    busy = sample_load(nvml=nvml)
    assert busy.gpu == 0.2 and busy.vram == 0.258  # one of four GPUs at 80%, full
    assert 0 <= busy.cpu <= 1 and 0 < busy.ram <= 1
    lost = sample_load(nvml=RecordedNvml(recording("nvml_4x_l4.json"), fail_at=2))
    assert (lost.gpu, lost.vram) == (0.0, 0.0)
    none = sample_load(nvml=RecordedNvml(None, fail_init="Driver Not Loaded"))
    assert (none.gpu, none.vram) == (0.0, 0.0)
