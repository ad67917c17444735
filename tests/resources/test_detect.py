"""Detection of what a machine has: GPUs from recorded NVML answers (data/), failures that
leave a note, and the CPU and memory read from /proc."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from p2psched.resources.detect import detect, detect_gpus
from p2psched.resources.profile import Gpu

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
