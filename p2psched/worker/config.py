"""The worker config file (TOML, `--config`): prices, drivers, models, labels, slots, and
overrides of what detection found.

Owns: reading and checking the file, and merging it with detection into a `Profile`.
Promises: a bad file raises `ConfigError` naming the file, the field and the reason, before the
worker starts; an absent field keeps its default or what was detected.

    [worker]
    slots = 1                       # tasks it runs at once
    drivers = ["http"]              # drivers the operator enables
    min_price = 0.01                # per task
    models = ["llama-3-8b"]         # installed models it serves
    loaded_models = ["llama-3-8b"]  # of those, the ones in memory now
    labels = { region = "eu", owner = "ana" }

    [network]
    download_mbps = 1000
    upload_mbps = 100

    [override]                      # replaces what was detected
    cpu_model = "AMD EPYC 7763"
    cpu_cores = 64
    ram_gb = 512
    disk_gb = 2000
    gpus = [{ model = "NVIDIA A100-SXM4-80GB", vram_gb = 80 }]
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psched.resources.detect import Detected
from p2psched.resources.profile import Gpu, Profile
from p2psched.wire.codec import decode

KNOWN_DRIVERS = ("sleep", "echo", "command", "http")


class ConfigError(ValueError):
    """A worker config the worker cannot start with; the message says where and why."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    slots: int = 1
    drivers: tuple[str, ...] = ("echo",)
    min_price: float = 0.0
    models: tuple[str, ...] = ()
    loaded_models: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    download_mbps: float = 0.0
    upload_mbps: float = 0.0
    override: dict[str, Any] = field(default_factory=dict)

    def profile(self, detected: Detected, addresses: tuple[str, ...] = ()) -> Profile:
        """This worker's public profile: what was detected, with the overrides on top."""
        o = self.override
        gpus = detected.gpus
        if "gpus" in o:
            gpus = tuple(
                Gpu(g["model"], float(g["vram_gb"]), g.get("driver", "")) for g in o["gpus"]
            )
        return Profile(
            cpu_model=o.get("cpu_model", detected.cpu_model),
            cpu_cores=o.get("cpu_cores", detected.cpu_cores),
            ram_gb=float(o.get("ram_gb", detected.ram_gb)),
            disk_gb=float(o.get("disk_gb", detected.disk_gb)),
            gpus=gpus,
            installed_models=self.models,
            loaded_models=self.loaded_models,
            download_mbps=self.download_mbps,
            upload_mbps=self.upload_mbps,
            workload_cpu=detected.workload_cpu,
            workload_ram=detected.workload_ram,
            min_price=self.min_price,
            drivers=self.drivers,
            free_slots=self.slots,
            labels=self.labels,
            addresses=addresses,
        )


def _fail(path: Path, where: str, why: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {why}")


def _table(path: Path, doc: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise _fail(path, f"[{name}]", "must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise _fail(
            path,
            f"[{name}] {sorted(unknown)[0]}",
            f"unknown field; known: {', '.join(sorted(allowed))}",
        )
    return table


def _number(path: Path, where: str, v: Any, *, minimum: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not minimum <= v < math.inf:
        raise _fail(path, where, f"must be a finite number >= {minimum:g}, not {v!r}")
    return float(v)


def _names(path: Path, where: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and 0 < len(x) <= 128 for x in v):
        raise _fail(path, where, f"must be a list of names, not {v!r}")
    return tuple(v)


def load_config(path: Path) -> WorkerConfig:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; pass the path of the worker's TOML config"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    unknown = set(doc) - {"worker", "network", "override"}
    if unknown:
        raise _fail(
            path, f"[{sorted(unknown)[0]}]", "unknown table; known: [worker], [network], [override]"
        )
    w = _table(
        path, doc, "worker", {"slots", "drivers", "min_price", "models", "loaded_models", "labels"}
    )
    n = _table(path, doc, "network", {"download_mbps", "upload_mbps"})
    o = _table(path, doc, "override", {"cpu_model", "cpu_cores", "ram_gb", "disk_gb", "gpus"})
    slots = w.get("slots", 1)
    if isinstance(slots, bool) or not isinstance(slots, int) or not 0 <= slots <= 1024:
        raise _fail(
            path, "[worker] slots", f"must be a whole number of tasks, 0..1024, not {slots!r}"
        )
    drivers = _names(path, "[worker] drivers", w.get("drivers", ["echo"]))
    for d in drivers:
        if d not in KNOWN_DRIVERS:
            raise _fail(
                path, "[worker] drivers", f"unknown driver {d!r}; known: {', '.join(KNOWN_DRIVERS)}"
            )
    models = _names(path, "[worker] models", w.get("models", []))
    loaded = _names(path, "[worker] loaded_models", w.get("loaded_models", []))
    for m in loaded:
        if m not in models:
            raise _fail(path, "[worker] loaded_models", f"{m!r} is loaded but not among models")
    labels = w.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise _fail(
            path, "[worker] labels", 'must be a table of text values, like { region = "eu" }'
        )
    if "cpu_cores" in o and (
        isinstance(o["cpu_cores"], bool)
        or not isinstance(o["cpu_cores"], int)
        or o["cpu_cores"] < 1
    ):
        raise _fail(
            path, "[override] cpu_cores", f"must be a whole number >= 1, not {o['cpu_cores']!r}"
        )
    if "cpu_model" in o and not isinstance(o["cpu_model"], str):
        raise _fail(path, "[override] cpu_model", "must be text")
    for key in ("ram_gb", "disk_gb"):
        if key in o:
            _number(path, f"[override] {key}", o[key])
    if not isinstance(o.get("gpus", []), list):
        raise _fail(path, "[override] gpus", 'must be a list like [{ model = "...", vram_gb = N }]')
    for i, g in enumerate(o.get("gpus", [])):
        where = f"[override] gpus[{i}]"
        if (
            not isinstance(g, dict)
            or not isinstance(g.get("model"), str)
            or set(g) - {"model", "vram_gb", "driver"}
        ):
            raise _fail(path, where, 'must be { model = "...", vram_gb = N }')
        _number(path, f"{where}.vram_gb", g.get("vram_gb"))
    config = WorkerConfig(
        slots=slots,
        drivers=drivers,
        min_price=_number(path, "[worker] min_price", w.get("min_price", 0.0)),
        models=models,
        loaded_models=loaded,
        labels=tuple(sorted(labels.items())),
        download_mbps=_number(path, "[network] download_mbps", n.get("download_mbps", 0.0)),
        upload_mbps=_number(path, "[network] upload_mbps", n.get("upload_mbps", 0.0)),
        override=dict(o),
    )
    # What the worker will advertise must be what every asker accepts: check it now, against
    # the same schema and size limit, rather than be silently left out of every answer later.
    sample = config.profile(Detected("CPU", 1, 1.0, 1.0, (), 0.0, 0.0), addresses=("0.0.0.0:0",))
    try:
        Profile.from_wire(decode(sample.encode()))
    except ValueError as e:  # SchemaError, or the size limit
        raise ConfigError(f"{path}: {e}") from None
    return config
