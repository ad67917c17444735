"""The worker config file (TOML, `--config`): prices, drivers, models, labels, slots, and
overrides of what detection found.

Owns: reading and checking the file, and merging it with detection into a `Profile`.
Promises: a bad file raises `ConfigError` naming the file, the field and the reason, before the
worker starts; an absent field keeps its default or what was detected.

    [worker]
    slots = 1                       # tasks it runs at once (default: one per GPU, at least 1)
    queue = 4                       # tasks it accepts beyond those, so no slot waits on the network
    drivers = ["http"]              # drivers the operator enables
    min_price = 0.01                # per task
    models = ["llama-3-8b"]         # installed models it serves
    loaded_models = ["llama-3-8b"]  # of those, the ones in memory now
    labels = { region = "eu", owner = "ana" }

    [drivers.command]               # only with "command" in [worker] drivers
    allow = { wc = ["/usr/bin/wc", "-c"] }  # name a task asks for -> argv prefix, absolute path
    max_output_bytes = 1048576      # stdout and stderr, each

    [drivers.http]                  # only with "http" in [worker] drivers
    endpoints = { "llama-3-8b" = "http://127.0.0.1:8000/v1/completions" }  # model -> URL; "*" any
    timeout_s = 120
    max_response_bytes = 4194304

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
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from p2psched.resources.detect import Detected
from p2psched.resources.driver_inputs import KNOWN_DRIVERS as KNOWN_DRIVERS
from p2psched.resources.profile import Gpu, Profile
from p2psched.wire.codec import decode
from p2psched.wire.deal import MAX_RESULT_BYTES

CONFIGURABLE_DRIVERS = ("command", "http")
ANY_MODEL = "*"  # the [drivers.http] endpoint for models not listed by name
_PROGRAM_NAME = re.compile(r"[A-Za-z0-9._+-]{1,64}")
# A result travels back in one message of at most MAX_RESULT_BYTES: stdout and stderr
# together, or a parsed HTTP answer, must fit.
_MAX_OUTPUT_BYTES = MAX_RESULT_BYTES // 3
_MAX_RESPONSE_BYTES = MAX_RESULT_BYTES * 2 // 3


class ConfigError(ValueError):
    """A worker config the worker cannot start with; the message says where and why."""


@dataclass(frozen=True, slots=True)
class CommandDriverConfig:
    """[drivers.command]: the programs a task may run, by name, and how much they may print."""

    allow: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    max_output_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class HttpDriverConfig:
    """[drivers.http]: where each model is served, and how long and large an answer may be."""

    endpoints: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0
    max_response_bytes: int = 4 << 20


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    slots: int | None = None  # None: one per GPU (at least one)
    queue_depth: int = 4
    drivers: tuple[str, ...] = ("echo",)
    min_price: float = 0.0
    models: tuple[str, ...] = ()
    loaded_models: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    download_mbps: float = 0.0
    upload_mbps: float = 0.0
    override: dict[str, Any] = field(default_factory=dict)
    command_driver: CommandDriverConfig = field(default_factory=CommandDriverConfig)
    http_driver: HttpDriverConfig = field(default_factory=HttpDriverConfig)

    def gpus(self, detected: Detected) -> tuple[Gpu, ...]:
        if "gpus" not in self.override:
            return detected.gpus
        return tuple(
            Gpu(g["model"], float(g["vram_gb"]), g.get("driver", "")) for g in self.override["gpus"]
        )

    def slot_count(self, detected: Detected) -> int:
        """Tasks run at once: as configured, else one per GPU (a task has a GPU to itself)."""
        return self.slots if self.slots is not None else max(1, len(self.gpus(detected)))

    def profile(self, detected: Detected, addresses: tuple[str, ...] = ()) -> Profile:
        """This worker's public profile: what was detected, with the overrides on top."""
        o = self.override
        gpus = self.gpus(detected)
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
            free_slots=self.slot_count(detected),
            labels=self.labels,
            addresses=addresses,
        )


def _fail(path: Path, where: str, why: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {why}")


def _table(path: Path, doc: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    table = doc
    for part in name.split("."):
        table = table.get(part, {})
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


def _byte_cap(path: Path, where: str, v: Any, most: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
        raise _fail(
            path,
            where,
            f"must be a whole number of bytes, 1..{most} (a result must fit one message), "
            f"not {v!r}",
        )
    return v


def _command_driver(path: Path, c: dict[str, Any]) -> CommandDriverConfig:
    allow = c.get("allow", {})
    if not isinstance(allow, dict):
        raise _fail(
            path, "[drivers.command] allow", 'must be a table like { wc = ["/usr/bin/wc", "-c"] }'
        )
    programs: dict[str, tuple[str, ...]] = {}
    for name, argv in allow.items():
        where = f"[drivers.command] allow.{name}"
        if not _PROGRAM_NAME.fullmatch(name):
            raise _fail(path, where, "a program's name is 1-64 letters, digits, '.', '_', '+', '-'")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and "\0" not in a for a in argv)
        ):
            raise _fail(path, where, f'must be a list like ["/usr/bin/wc", "-c"], not {argv!r}')
        program = Path(argv[0])
        # An absolute path: what runs must not depend on the PATH the worker was started with.
        if not program.is_absolute():
            raise _fail(path, where, f"{argv[0]!r} must be an absolute path, like /usr/bin/wc")
        if not program.is_file():
            raise _fail(path, where, f"{argv[0]} does not exist (or is not a file)")
        if not os.access(program, os.X_OK):
            raise _fail(path, where, f"{argv[0]} is not executable")
        programs[name] = tuple(argv)
    return CommandDriverConfig(
        allow=programs,
        max_output_bytes=_byte_cap(
            path,
            "[drivers.command] max_output_bytes",
            c.get("max_output_bytes", CommandDriverConfig().max_output_bytes),
            _MAX_OUTPUT_BYTES,
        ),
    )


def _http_driver(path: Path, h: dict[str, Any]) -> HttpDriverConfig:
    endpoints = h.get("endpoints", {})
    if not isinstance(endpoints, dict):
        raise _fail(
            path,
            "[drivers.http] endpoints",
            'must be a table of model = URL, like { "llama-3-8b" = "http://127.0.0.1:8000/" }',
        )
    for model, url in endpoints.items():
        where = f"[drivers.http] endpoints.{model}"
        if not isinstance(url, str):
            raise _fail(path, where, f"must be a URL, not {url!r}")
        try:
            parts = urlsplit(url)
            _ = parts.port  # parsed lazily: a bad port must fail here, not on the first task
        except ValueError as e:
            raise _fail(path, where, f"{url!r} is not a URL ({e})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _fail(path, where, f"{url!r} must be an http:// or https:// URL with a host")
    defaults = HttpDriverConfig()
    timeout = _number(path, "[drivers.http] timeout_s", h.get("timeout_s", defaults.timeout_s))
    if timeout == 0:
        raise _fail(path, "[drivers.http] timeout_s", "must be more than 0 seconds")
    return HttpDriverConfig(
        endpoints=dict(endpoints),
        timeout_s=timeout,
        max_response_bytes=_byte_cap(
            path,
            "[drivers.http] max_response_bytes",
            h.get("max_response_bytes", defaults.max_response_bytes),
            _MAX_RESPONSE_BYTES,
        ),
    )


def _driver_settings(
    path: Path, doc: dict[str, Any], drivers: tuple[str, ...]
) -> tuple[CommandDriverConfig, HttpDriverConfig]:
    tables = doc.get("drivers", {})
    if not isinstance(tables, dict):
        raise _fail(path, "[drivers]", "must hold tables like [drivers.command]")
    for name in sorted(tables):
        where = f"[drivers.{name}]"
        if name not in CONFIGURABLE_DRIVERS:
            if name in KNOWN_DRIVERS:
                raise _fail(path, where, f"the {name} driver has no settings; remove this table")
            raise _fail(path, where, "unknown table; known: [drivers.command], [drivers.http]")
        # Settings for a driver that is off are most likely a driver the operator meant to enable.
        if name not in drivers:
            raise _fail(
                path,
                where,
                f"the {name} driver is not enabled; add {name!r} to [worker] drivers to "
                "enable it, or remove this table",
            )
    command = _table(path, doc, "drivers.command", {"allow", "max_output_bytes"})
    http = _table(path, doc, "drivers.http", {"endpoints", "timeout_s", "max_response_bytes"})
    return _command_driver(path, command), _http_driver(path, http)


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
    unknown = set(doc) - {"worker", "network", "override", "drivers"}
    if unknown:
        raise _fail(
            path,
            f"[{sorted(unknown)[0]}]",
            "unknown table; known: [worker], [drivers], [network], [override]",
        )
    w = _table(
        path,
        doc,
        "worker",
        {"slots", "queue", "drivers", "min_price", "models", "loaded_models", "labels"},
    )
    n = _table(path, doc, "network", {"download_mbps", "upload_mbps"})
    o = _table(path, doc, "override", {"cpu_model", "cpu_cores", "ram_gb", "disk_gb", "gpus"})
    slots = w.get("slots")
    queue = w.get("queue", 4)
    for key, v, least in (("slots", slots, 1), ("queue", queue, 0)):
        if key == "slots" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not least <= v <= 1024:
            raise _fail(
                path,
                f"[worker] {key}",
                f"must be a whole number of tasks, {least}..1024, not {v!r}",
            )
    drivers = _names(path, "[worker] drivers", w.get("drivers", ["echo"]))
    for d in drivers:
        if d not in KNOWN_DRIVERS:
            raise _fail(
                path, "[worker] drivers", f"unknown driver {d!r}; known: {', '.join(KNOWN_DRIVERS)}"
            )
    command_driver, http_driver = _driver_settings(path, doc, drivers)
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
        queue_depth=queue,
        drivers=drivers,
        min_price=_number(path, "[worker] min_price", w.get("min_price", 0.0)),
        models=models,
        loaded_models=loaded,
        labels=tuple(sorted(labels.items())),
        download_mbps=_number(path, "[network] download_mbps", n.get("download_mbps", 0.0)),
        upload_mbps=_number(path, "[network] upload_mbps", n.get("upload_mbps", 0.0)),
        override=dict(o),
        command_driver=command_driver,
        http_driver=http_driver,
    )
    # What the worker will advertise must be what every asker accepts: check it now, against
    # the same schema and size limit, rather than be silently left out of every answer later.
    sample = config.profile(Detected("CPU", 1, 1.0, 1.0, (), 0.0, 0.0), addresses=("0.0.0.0:0",))
    try:
        Profile.from_wire(decode(sample.encode()))
    except ValueError as e:  # SchemaError, or the size limit
        raise ConfigError(f"{path}: {e}") from None
    return config
