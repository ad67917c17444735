"""The worker config file (TOML, `--config`): prices, drivers, models, labels, slots, and
overrides of what detection found.

Owns: the file's tables as strict pydantic models (a `true` is no number; an unknown table or
field is refused), their checks in the operator's words, and merging the file with detection
into a `Profile`.
Promises: a bad file raises `ConfigError` naming the file, the field and the reason, before the
worker starts; an absent field keeps its default or what was detected.

    [worker]
    slots = 1                       # tasks it runs at once (default: one per GPU, at least 1)
    queue = 4                       # tasks it accepts beyond those, so no slot waits on the network
    max_message_bytes = 10485760    # from a scheduler that has said what it is: 64 KiB..10 MiB
    drivers = ["http"]              # drivers the operator enables
    min_price = 0.01                # per task
    models = ["llama-3-8b"]         # installed models it serves
    loaded_models = ["llama-3-8b"]  # of those, the ones in memory now
    labels = { region = "eu", owner = "ana" }

    [drivers.command]               # only with "command" in [worker] drivers
    sandbox = "bwrap"               # or "none": unconfined, warned about on every start
    network = false                 # true: the sandbox shares the worker's network
    stderr = false                  # stdout comes back; stderr too only with true
    limits = { cpu_s = 60, memory_mb = 1024, processes = 64, file_size_mb = 256, open_files = 256 }
    max_output_bytes = 1048576      # stdout and stderr, each

    [drivers.command.programs.wc]   # the name a task asks for: a fixed argv, typed parameters
    argv = ["/usr/bin/wc"]
    params.lines = { type = "flag", arg = "-l" }
    params.file = { type = "file" } # a file of the task's scratch dir, after `--`
    # other types: { type = "integer", min = 1, max = 9 }, { type = "string", max_length = 64 }

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
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from p2psched.resources.detect import Detected
from p2psched.resources.driver_inputs import KNOWN_DRIVERS as KNOWN_DRIVERS
from p2psched.resources.driver_inputs import ParamRule
from p2psched.resources.profile import Gpu, Profile
from p2psched.wire.codec import decode
from p2psched.wire.deal import MAX_COMMIT_MESSAGE, MAX_RESULT_BYTES

CONFIGURABLE_DRIVERS = ("command", "http")
ANY_MODEL = "*"  # the [drivers.http] endpoint for models not listed by name
_PROGRAM_NAME = re.compile(r"[A-Za-z0-9._+-]{1,64}")
# A result travels back in one message of at most MAX_RESULT_BYTES: stdout and stderr
# together, or a parsed HTTP answer, must fit.
_MAX_OUTPUT_BYTES = MAX_RESULT_BYTES // 3
_MAX_RESPONSE_BYTES = MAX_RESULT_BYTES * 2 // 3
_REFUSED = "worker_config"  # the pydantic error type of our own checks
# The wording of pydantic's own refusals, where a table's types refuse before our checks run.
_REASONS = {"model_type": "must be a table", "string_type": "must be text"}


class ConfigError(ValueError):
    """A worker config the worker cannot start with; the message says where and why."""


# -- checks of single values, each refusing in the operator's words ----------------------------


def _refuse(reason: str, *at: str | int) -> PydanticCustomError:
    # The reason goes in as context, not as the template: a reason may quote braces. `at` is
    # where below the value checked the problem lies (an entry of a table, a model's field).
    return PydanticCustomError(_REFUSED, "{reason}", {"reason": reason, "at": at})


def _finite(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
        raise _refuse(f"must be a finite number >= 0, not {v!r}")
    return float(v)


def _tasks(least: int) -> BeforeValidator:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not least <= v <= 1024:
            raise _refuse(f"must be a whole number of tasks, {least}..1024, not {v!r}")
        return v

    return BeforeValidator(check)


def _byte_cap(most: int) -> BeforeValidator:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
            raise _refuse(
                f"must be a whole number of bytes, 1..{most} (a result must fit one message), "
                f"not {v!r}"
            )
        return v

    return BeforeValidator(check)


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and 0 < len(x) <= 128 for x in v):
        raise _refuse(f"must be a list of names, not {v!r}")
    return tuple(v)


def _drivers(v: Any) -> tuple[str, ...]:
    names = _names(v)
    for d in names:
        if d not in KNOWN_DRIVERS:
            raise _refuse(f"unknown driver {d!r}; known: {', '.join(KNOWN_DRIVERS)}")
    return names


def _labels(v: Any) -> Any:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise _refuse('must be a table of text values, like { region = "eu" }')
    return v


def _cores(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _refuse(f"must be a whole number >= 1, not {v!r}")
    return v


def _gpu_list(v: Any) -> Any:
    if not isinstance(v, list):
        raise _refuse('must be a list like [{ model = "...", vram_gb = N }]')
    return v


def _timeout(v: Any) -> float:
    seconds = _finite(v)
    if seconds == 0:
        raise _refuse("must be more than 0 seconds")
    return seconds


def _endpoints(v: Any) -> Any:
    if not isinstance(v, dict):
        raise _refuse(
            'must be a table of model = URL, like { "llama-3-8b" = "http://127.0.0.1:8000/" }'
        )
    for model, url in v.items():
        if not isinstance(url, str):
            raise _refuse(f"must be a URL, not {url!r}", model)
        try:
            parts = urlsplit(url)
            _ = parts.port  # parsed lazily: a bad port must fail here, not on the first task
        except ValueError as e:
            raise _refuse(f"{url!r} is not a URL ({e})", model) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _refuse(f"{url!r} must be an http:// or https:// URL with a host", model)
    return v


_Amount = Annotated[float, BeforeValidator(_finite)]
_Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
# A table of the file: its values as written (strict: `true` is not 1), no unknown field.
_TABLE = ConfigDict(frozen=True, strict=True, extra="forbid")


# -- the driver settings, which the drivers take as they are -----------------------------------


def _program(name: str, v: Any) -> Any:
    if not _PROGRAM_NAME.fullmatch(name):
        raise _refuse("a program's name is 1-64 letters, digits, '.', '_', '+', '-'", name)
    if isinstance(v, CommandProgram):  # from code that builds a config
        v = v.model_dump()
    if not isinstance(v, dict):
        raise _refuse(f"must be a table like {_PROGRAM_EXAMPLE}", name)
    argv = v.get("argv")
    # A tuple is what code that builds a config passes; the file gives a list.
    if (
        not isinstance(argv, list | tuple)
        or not argv
        or not all(isinstance(a, str) and "\0" not in a for a in argv)
    ):
        raise _refuse(f'must be a list like ["/usr/bin/wc"], not {argv!r}', name, "argv")
    program = Path(argv[0])
    # An absolute path: what runs must not depend on the PATH the worker was started with.
    if not program.is_absolute():
        raise _refuse(f"{argv[0]!r} must be an absolute path, like /usr/bin/wc", name, "argv")
    if not program.is_file():
        raise _refuse(f"{argv[0]} does not exist (or is not a file)", name, "argv")
    if not os.access(program, os.X_OK):
        raise _refuse(f"{argv[0]} is not executable", name, "argv")
    return {**v, "argv": tuple(argv)}


def _programs(v: Any) -> Any:
    if not isinstance(v, dict):
        raise _refuse(f"must hold tables like [drivers.command.programs.wc]: {_PROGRAM_EXAMPLE}")
    return {name: _program(name, program) for name, program in v.items()}


def _no_allowlist(v: Any) -> None:
    raise _refuse(
        "free arguments are no longer run (a task could pass any option to the program); "
        "declare each program with its typed parameters instead, like "
        f"[drivers.command.programs.wc] {_PROGRAM_EXAMPLE}; task inputs then give "
        "{program: wc, params: {lines: true, file: in.txt}, files: {in.txt: ...}}"
    )


def _option(v: Any) -> str:
    if not isinstance(v, str) or not 1 < len(v) <= 64 or not v.startswith("-") or "\0" in v:
        raise _refuse(
            f'must be an option of 2-64 characters starting with "-", like "-l", not {v!r}'
        )
    return v


_PROGRAM_EXAMPLE = (
    'argv = ["/usr/bin/wc"], params = { lines = { type = "flag", arg = "-l" }, '
    'file = { type = "file" } }'
)


class CommandParam(BaseModel):
    """A parameter of a program: a flag, a whole number in a range, text of bounded length that
    cannot start with '-', or a file of the task's scratch directory. With `arg` it is written
    as an option (`arg`, then its value; a flag alone); without, after `--`."""

    model_config = _TABLE

    type: Literal["flag", "integer", "string", "file"]
    arg: Annotated[str, BeforeValidator(_option)] | None = None
    min: int = 0
    max: int = 2**31 - 1
    max_length: Annotated[int, Field(ge=1, le=4096)] = 256

    @model_validator(mode="after")
    def _range(self) -> CommandParam:
        if self.min > self.max:
            raise _refuse(f"min ({self.min}) is more than max ({self.max})", "min")
        return self

    def rule(self) -> ParamRule:
        return ParamRule(self.type, self.arg, self.min, self.max, self.max_length)


class CommandProgram(BaseModel):
    """[drivers.command.programs.NAME]: its fixed argv and the parameters a task may give it."""

    model_config = _TABLE

    argv: tuple[str, ...]
    params: Mapping[str, CommandParam] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _flags_are_options(self) -> CommandProgram:
        for name, param in self.params.items():
            if param.type == "flag" and param.arg is None:
                raise _refuse('a flag needs its option, like arg = "-l"', "params", name, "arg")
        return self


class CommandLimits(BaseModel):
    """[drivers.command] limits: what one task's processes may use (set with setrlimit)."""

    model_config = _TABLE

    cpu_s: Annotated[int, Field(ge=1)] = 60
    memory_mb: Annotated[int, Field(ge=16)] = 1024  # address space, per process
    processes: Annotated[int, Field(ge=2)] = 64  # of the user the tasks run as
    file_size_mb: Annotated[int, Field(ge=1)] = 256
    open_files: Annotated[int, Field(ge=16)] = 256


class CommandDriverConfig(BaseModel):
    """[drivers.command]: the programs a task may run, by name, with their typed parameters; the
    sandbox they run in and its limits; and what of their output comes back."""

    model_config = _TABLE

    programs: Annotated[Mapping[str, CommandProgram], BeforeValidator(_programs)] = Field(
        default_factory=dict
    )
    allow: Annotated[None, BeforeValidator(_no_allowlist)] = None
    sandbox: Literal["bwrap", "none"] = "bwrap"
    network: bool = False
    stderr: bool = False  # stdout comes back; stderr only when the operator says so
    limits: CommandLimits = CommandLimits()
    max_output_bytes: Annotated[int, _byte_cap(_MAX_OUTPUT_BYTES)] = 1 << 20


class HttpDriverConfig(BaseModel):
    """[drivers.http]: where each model is served, and how long and large an answer may be."""

    model_config = _TABLE

    endpoints: Annotated[Mapping[str, str], BeforeValidator(_endpoints)] = Field(
        default_factory=dict
    )
    timeout_s: Annotated[float, BeforeValidator(_timeout)] = 120.0
    max_response_bytes: Annotated[int, _byte_cap(_MAX_RESPONSE_BYTES)] = 4 << 20


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """A worker's settings, checked: what its file said (`load_config`), else the defaults.
    The driver settings are the file's tables as they are; the rest is flattened for the roles."""

    slots: int | None = None  # None: one per GPU (at least one)
    queue_depth: int = 4
    max_message_bytes: int = MAX_COMMIT_MESSAGE  # from a scheduler that said what it is
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


# -- the file's tables --------------------------------------------------------------------------


class _WorkerTable(BaseModel):
    model_config = _TABLE

    slots: Annotated[int, _tasks(1)] | None = None
    queue: Annotated[int, _tasks(0)] = 4
    max_message_bytes: int = Field(default=MAX_COMMIT_MESSAGE, ge=64 << 10, le=MAX_COMMIT_MESSAGE)
    drivers: Annotated[tuple[str, ...], BeforeValidator(_drivers)] = ("echo",)
    min_price: _Amount = 0.0
    models: _Names = ()
    loaded_models: _Names = ()
    labels: Annotated[dict[str, str], BeforeValidator(_labels)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _loaded_are_installed(self) -> _WorkerTable:
        for m in self.loaded_models:
            if m not in self.models:
                raise _refuse(f"{m!r} is loaded but not among models", "loaded_models")
        return self


class _NetworkTable(BaseModel):
    model_config = _TABLE

    download_mbps: _Amount = 0.0
    upload_mbps: _Amount = 0.0


class _Gpu(BaseModel):
    model_config = _TABLE

    model: str
    vram_gb: _Amount
    driver: str = ""

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, g: Any) -> Any:
        if (
            not isinstance(g, dict)
            or not isinstance(g.get("model"), str)
            or set(g) - set(cls.model_fields)
        ):
            raise _refuse('must be { model = "...", vram_gb = N }')
        if "vram_gb" not in g:
            raise _refuse("must be a finite number >= 0, not None", "vram_gb")
        return g


class _OverrideTable(BaseModel):
    model_config = _TABLE

    cpu_model: str | None = None
    cpu_cores: Annotated[int, BeforeValidator(_cores)] | None = None
    ram_gb: _Amount | None = None
    disk_gb: _Amount | None = None
    gpus: Annotated[list[_Gpu], BeforeValidator(_gpu_list)] | None = None


class _DriverTables(BaseModel):
    model_config = _TABLE

    command: CommandDriverConfig = CommandDriverConfig()
    http: HttpDriverConfig = HttpDriverConfig()

    @model_validator(mode="before")
    @classmethod
    def _settings_only(cls, tables: Any) -> Any:
        if not isinstance(tables, dict):
            raise _refuse("must hold tables like [drivers.command]")
        for name in sorted(tables):
            if name in KNOWN_DRIVERS and name not in CONFIGURABLE_DRIVERS:
                raise _refuse(f"the {name} driver has no settings; remove this table", name)
        return tables


class _WorkerFile(BaseModel):
    model_config = _TABLE

    worker: _WorkerTable = _WorkerTable()
    drivers: _DriverTables = _DriverTables()
    network: _NetworkTable = _NetworkTable()
    override: _OverrideTable = _OverrideTable()

    @model_validator(mode="after")
    def _settings_are_for_enabled_drivers(self) -> _WorkerFile:
        # Settings for a driver that is off are most likely a driver the operator meant to enable.
        for name in sorted(self.drivers.model_fields_set):
            if name not in self.worker.drivers:
                raise _refuse(
                    f"the {name} driver is not enabled; add {name!r} to [worker] drivers to "
                    "enable it, or remove this table",
                    "drivers",
                    name,
                )
        return self


def load_config(path: Path) -> WorkerConfig:
    """The worker config at `path`, checked; `ConfigError` names the field and the reason."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; pass the path of a worker's config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    try:
        file = _WorkerFile.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_said(_first(e))}") from None
    w = file.worker
    config = WorkerConfig(
        slots=w.slots,
        queue_depth=w.queue,
        max_message_bytes=w.max_message_bytes,
        drivers=w.drivers,
        min_price=w.min_price,
        models=w.models,
        loaded_models=w.loaded_models,
        labels=tuple(sorted(w.labels.items())),
        download_mbps=file.network.download_mbps,
        upload_mbps=file.network.upload_mbps,
        override=file.override.model_dump(exclude_unset=True),
        command_driver=file.drivers.command,
        http_driver=file.drivers.http,
    )
    # What the worker will advertise must be what every asker accepts: check it now, against
    # the same schema and size limit, rather than be silently left out of every answer later.
    sample = config.profile(Detected("CPU", 1, 1.0, 1.0, (), 0.0, 0.0), addresses=("0.0.0.0:0",))
    try:
        Profile.from_wire(decode(sample.encode()))
    except ValueError as e:  # SchemaError, or the size limit
        raise ConfigError(f"{path}: {e}") from None
    return config


# -- pydantic's errors in the file's terms -----------------------------------------------------


def _first(e: ValidationError) -> ErrorDetails:
    """The one error shown: a name the file misspelled before any value (its value's check may
    be moot once the name is right)."""
    errors = e.errors()
    return next((err for err in errors if err["type"] == "extra_forbidden"), errors[0])


def _said(err: ErrorDetails) -> str:
    """One error as the file shows it: "[drivers.http] endpoints.m: reason"."""
    ctx = err.get("ctx") or {}
    table, keys, model = _place((*err["loc"], *ctx.get("at", ())))
    where = f"[{'.'.join(table)}]" + (f" {_key_path(keys)}" if keys else "")
    if err["type"] == _REFUSED:
        reason = ctx["reason"]
    elif err["type"] == "extra_forbidden" and keys:
        holder = _model_within(model, keys[:-1])
        reason = f"unknown field; known: {', '.join(sorted(holder.model_fields))}"
    elif err["type"] == "extra_forbidden":
        parent = table[:-1]
        known = (f"[{'.'.join((*parent, name))}]" for name in model.model_fields)
        reason = f"unknown table; known: {', '.join(known)}"
    else:
        reason = _REASONS.get(err["type"], err["msg"].replace("Input should be", "must be", 1))
    return f"{where}: {reason}"


def _place(
    loc: tuple[str | int, ...],
) -> tuple[tuple[str, ...], tuple[str | int, ...], type[BaseModel]]:
    """Where `loc` is in the file: its table, the key path within it, and the model of that
    table (for a table the file may not have: the model of the table that would hold it)."""
    model: type[BaseModel] = _WorkerFile
    table: tuple[str, ...] = ()
    for i, part in enumerate(loc):
        if not _holds_tables(model):
            return table, loc[i:], model
        table += (str(part),)
        known = model.model_fields.get(str(part))
        inner = _table_model(known.annotation) if known is not None else None
        if inner is None:
            return table, loc[i + 1 :], model
        model = inner
    return table, (), model


def _model_within(model: type[BaseModel], keys: tuple[str | int, ...]) -> type[BaseModel]:
    """The model of the value at `keys` inside a table: through fields that are models, and
    through the entries of a mapping of them (like [drivers.command] programs.wc.params.n)."""
    inner = model
    for key in keys:
        if issubclass(inner, BaseModel) and str(key) in inner.model_fields:
            annotation = inner.model_fields[str(key)].annotation
        else:  # a key of a mapping: its values' model
            annotation = inner
        args = typing.get_args(annotation)
        found = _table_model(args[-1] if args else annotation)
        if found is None:
            return model
        inner = found
    return inner


def _table_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _holds_tables(model: type[BaseModel]) -> bool:
    """A table whose every field is a table: a name in it is a table's, like [drivers.http]."""
    return all(_table_model(f.annotation) is not None for f in model.model_fields.values())


def _key_path(keys: tuple[str | int, ...]) -> str:
    path = ""
    for k in keys:
        path += f"[{k}]" if isinstance(k, int) else f".{k}" if path else k
    return path
