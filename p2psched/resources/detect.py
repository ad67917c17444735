"""Detects what this machine has: CPU, RAM, disk, and NVIDIA GPUs through NVML; and how
busy it is now (`sample_load`).

Owns: reading /proc, the disk, and NVIDIA's management library (the `nvidia-ml-py` package).
Promises: never fails for want of a GPU, a driver or the library: a machine without them has
no GPUs, and `Detected.notes` says why. NVML is passed in (any object with pynvml's functions),
so detection is tested on recorded answers. Each GPU's `Device` (NVML's index, UUID and minor
number) is what the worker hands its tasks (`worker.devices`).
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
class Device:
    """One GPU as a task is given it: NVML's index, its UUID (what CUDA_VISIBLE_DEVICES names:
    CUDA's own numbering need not follow NVML's), and the minor number of its /dev/nvidiaN."""

    index: int
    uuid: str
    minor: int | None = None


@dataclass(frozen=True, slots=True)
class Load:
    """How busy this machine is now, each a fraction of its capacity (0..1)."""

    cpu: float
    ram: float
    gpu: float = 0.0  # the GPUs' mean utilization
    vram: float = 0.0  # of their memory, the part in use


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
    devices: tuple[Device, ...] = field(default=())  # the GPUs', in `gpus`' order


def _text(value: Any) -> str:
    """pynvml answers str, older releases bytes."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _nvml(library: Any | None) -> tuple[Any, str | None]:
    """NVML, initialised (the caller shuts it down), or None and why not."""
    nvml: Any = library
    if nvml is None:
        try:
            import pynvml  # the nvidia-ml-py package
        except ImportError:
            return None, "no GPU detection: the nvidia-ml-py package is not installed"
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no usable GPU
        return None, f"no NVIDIA GPU found ({e})"
    return nvml, None


def _shut_down(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # shutting down a library that half-failed: nothing more to do
        pass


def _minor(nvml: Any, handle: Any) -> int | None:
    try:
        return int(nvml.nvmlDeviceGetMinorNumber(handle))
    except Exception:  # not on every platform (Windows): the sandbox then binds no device node
        return None


def detect_devices(
    library: Any | None = None,
) -> tuple[tuple[Gpu, ...], tuple[Device, ...], str | None]:
    """The GPUs NVML reports, their devices, and a note when there are none for a reason
    worth saying."""
    nvml, note = _nvml(library)
    if nvml is None:
        return (), (), note
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus, devices = [], []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(nvml.nvmlDeviceGetName(handle))
            total = nvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(Gpu(name, round(total / GIB, 1), driver))
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            devices.append(Device(index, uuid, _minor(nvml, handle)))
        return tuple(gpus), tuple(devices), None
    except Exception as e:  # a GPU that stops answering midway: report none rather than half
        return (), (), f"NVML failed while listing GPUs ({e})"
    finally:
        _shut_down(nvml)


def detect_gpus(library: Any | None = None) -> tuple[tuple[Gpu, ...], str | None]:
    """The GPUs NVML reports, and a note when there are none for a reason worth saying."""
    gpus, _, note = detect_devices(library)
    return gpus, note


def _gpu_load(library: Any | None) -> tuple[float, float]:
    """The GPUs' mean utilization and the part of their memory in use (0, 0 without NVML,
    or when a GPU stops answering: the ad then says nothing it does not know)."""
    nvml, _ = _nvml(library)
    if nvml is None:
        return 0.0, 0.0
    try:
        busy, used, total = [], 0, 0
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            busy.append(nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            used, total = used + memory.used, total + memory.total
        mean = sum(busy) / len(busy) if busy else 0.0
        return _fraction(mean), _fraction(used / total if total else 0.0)
    except Exception:  # as detection does: a GPU lost midway reports nothing
        return 0.0, 0.0
    finally:
        _shut_down(nvml)


def _fraction(x: float) -> float:
    return round(min(1.0, max(0.0, x)), 3)


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
    probe = data_dir if data_dir.exists() else data_dir.parent
    try:
        disk = shutil.disk_usage(probe).free
    except OSError:
        disk = 0
    gpus, devices, note = detect_devices(nvml)
    load = _host_load(proc)
    return Detected(
        cpu_model=_cpu_model(proc),
        cpu_cores=cores,
        ram_gb=round(total / GIB, 1),
        disk_gb=round(disk / GIB, 1),
        gpus=gpus,
        workload_cpu=load[0],
        workload_ram=load[1],
        notes=(note,) if note else (),
        devices=devices,
    )


def _host_load(proc: Path) -> tuple[float, float]:
    """The CPU's load (the last minute's average, per core) and the part of RAM in use."""
    try:
        cpu = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        cpu = 0.0
    mem = _meminfo(proc)
    total = mem.get("MemTotal", 0)
    available = mem.get("MemAvailable", total)
    return _fraction(cpu), round(1 - available / total, 3) if total else 0.0


def sample_load(*, nvml: Any | None = None, proc: Path = Path("/proc")) -> Load:
    """How busy this machine is now: CPU, RAM, and its GPUs through NVML (blocking calls:
    run it off the event loop)."""
    cpu, ram = _host_load(proc)
    gpu, vram = _gpu_load(nvml)
    return Load(cpu, ram, gpu, vram)
