"""NVML as recorded (tests/resources/data/nvml_*.json): pynvml's function names answering a
recorded machine's values, which a test may change while a worker runs (`busy`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DATA = Path(__file__).parent.parent / "resources" / "data"


class NVMLError(Exception):
    pass


def recording(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())  # type: ignore[no-any-return]


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

    def busy(self, utilization: int, used_fraction: float) -> None:
        """Every GPU now `utilization` percent busy, with that part of its memory in use."""
        for device in self.rec["devices"]:
            device["nvmlDeviceGetUtilizationRates.gpu"] = utilization
            total = device["nvmlDeviceGetMemoryInfo.total"]
            device["nvmlDeviceGetMemoryInfo.used"] = int(total * used_fraction)

    def _out(self, value: str) -> str | bytes:
        return value.encode() if self.rec.get("bytes") else value

    def _device(self, handle: int) -> dict[str, Any]:
        return self.rec["devices"][handle]  # type: ignore[no-any-return]

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
        return self._out(self._device(handle)["nvmlDeviceGetName"])

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:
        return self._out(self._device(handle)["nvmlDeviceGetUUID"])

    def nvmlDeviceGetMinorNumber(self, handle: int) -> int:
        return int(self._device(handle)["nvmlDeviceGetMinorNumber"])

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        device = self._device(handle)
        return SimpleNamespace(
            total=device["nvmlDeviceGetMemoryInfo.total"],
            used=device.get("nvmlDeviceGetMemoryInfo.used", 0),
        )

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self._device(handle).get("nvmlDeviceGetUtilizationRates.gpu", 0))
