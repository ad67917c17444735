"""Detects what this machine has: CPU, RAM, disk, and NVIDIA GPUs through NVML.

Owns: reading /proc, the disk, and NVIDIA's management library (the `nvidia-ml-py` package).
Promises: never fails for want of a GPU, a driver or the library: a machine without them has
no GPUs, and `Detected.notes` says why. NVML is passed in (any object with pynvml's functions),
so detection is tested on recorded answers.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psched.resources.profile import Gpu

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Detected:
    cpu_model: str
    cpu_cores: int
    ram_gb: float
    disk_gb: float
    gpus: tuple[Gpu, ...]
    workload_cpu: float
    workload_ram: float
    notes: tuple[str, ...] = field(default=())


def _text(value: Any) -> str:
    """pynvml answers str, older releases bytes."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def detect_gpus(library: Any | None = None) -> tuple[tuple[Gpu, ...], str | None]:
    """The GPUs NVML reports, and a note when there are none for a reason worth saying."""
    nvml: Any = library
    if nvml is None:
        try:
            import pynvml  # the nvidia-ml-py package
        except ImportError:
            return (), "no GPU detection: the nvidia-ml-py package is not installed"
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no usable GPU
        return (), f"no NVIDIA GPU found ({e})"
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(nvml.nvmlDeviceGetName(handle))
            total = nvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(Gpu(name, round(total / GIB, 1), driver))
        return tuple(gpus), None
    except Exception as e:  # a GPU that stops answering midway: report none rather than half
        return (), f"NVML failed while listing GPUs ({e})"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # shutting down a library that half-failed: nothing more to do
            pass


def _meminfo(proc: Path) -> dict[str, int]:
    out = {}
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * 1024  # kB
    except OSError:
        pass
    return out


def _cpu_model(proc: Path) -> str:
    try:
        for line in (proc / "cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return "unknown CPU"


def detect(data_dir: Path, *, nvml: Any | None = None, proc: Path = Path("/proc")) -> Detected:
    """What this machine has, with free disk measured where the node keeps its data."""
    cores = os.cpu_count() or 1
    mem = _meminfo(proc)
    total = mem.get("MemTotal", 0)
    available = mem.get("MemAvailable", total)
    probe = data_dir if data_dir.exists() else data_dir.parent
    try:
        disk = shutil.disk_usage(probe).free
    except OSError:
        disk = 0
    try:
        load = os.getloadavg()[0] / cores
    except OSError:
        load = 0.0
    gpus, note = detect_gpus(nvml)
    return Detected(
        cpu_model=_cpu_model(proc),
        cpu_cores=cores,
        ram_gb=round(total / GIB, 1),
        disk_gb=round(disk / GIB, 1),
        gpus=gpus,
        workload_cpu=min(1.0, max(0.0, load)),
        workload_ram=round(1 - available / total, 3) if total else 0.0,
        notes=(note,) if note else (),
    )
