"""The worker config file (TOML, `--config`): prices, drivers, models, labels, slots, who may
use the worker and how much, and overrides of what detection found.

Owns: the file's tables as strict pydantic models (a `true` is no number; an unknown table or
field is refused; the `[drivers.NAME]` tables are in `driver_config`), their checks in the
operator's words, and merging the file with detection into a `Profile`.
Promises: a bad file raises `ConfigError` naming the file, the field and the reason, before the
worker starts; an absent field keeps its default or what was detected.

    [worker]
    slots = 1                       # tasks it runs at once (default: one per GPU, at least 1)
    queue = 4                       # tasks it accepts beyond those, so no slot waits on the network
    max_message_bytes = 10485760    # from a scheduler that has said what it is: 64 KiB..10 MiB
    receive_budget_bytes = 20971520 # messages over 64 KiB all schedulers' channels may be
                                    # receiving at once (at least max_message_bytes)
    drivers = ["http"]              # drivers the operator enables
    min_price = 0.01                # per task (of normal priority)
    # The price per band of the job's priority (0..9): low 0-3, normal 4-6 (the default 5),
    # high 7-9, as multiples of min_price (default 1.0 each). Priority is the scheduler's say:
    # any scheduler may ask at the cheapest band, and the ad shows that band's price.
    priority_multipliers = { low = 0.8, normal = 1.0, high = 1.5 }
    scheduler_grace_s = 60          # a scheduler gone this long has its running tasks stopped
    challenge_interval_s = 600      # one capacity challenge per scheduler this often, at most
    models = ["llama-3-8b"]         # installed models it serves
    loaded_models = ["llama-3-8b"]  # of those, the ones in memory now
    labels = { region = "eu", owner = "ana" }

    [schedulers]                    # who may use this worker, and how much (default: anyone, any)
    allow = ["<node id>", ...]      # given: only these (and the file's "allow" lines) are served
    deny = ["<node id>", ...]       # never these (deny wins over allow); ids are 64 hex digits
    serve = "allowed"               # or "anyone": the default unless allow is given
    file = "schedulers.txt"         # more: "allow <id>" / "deny <id>" lines (# comments), read
                                    # again when it changes; a bad line is logged and left out
                                    # (a path relative to this file's folder)
    slots = 4                       # tasks one scheduler may hold here at once (leased, queued,
                                    # running)
    spend_per_hour = 1.0            # what one scheduler may be charged here per rolling hour

    [drivers.echo]                  # any enabled driver's table caps what a task asks of it:
    max_timeout_s = 3600            # a longer timeout is refused (in its quote, and when sent)
    max_input_bytes = 524288        # a larger input too (default: what the wire carries)

    [drivers.command]               # only with "command" in [worker] drivers; and the caps
    sandbox = "bwrap"               # or "none": unconfined, warned about on every start
    network = false                 # true: the sandbox shares the worker's network
    stderr = false                  # stdout comes back; stderr too only with true
    limits = { cpu_s = 60, memory_mb = 1024, processes = 64, file_size_mb = 256, open_files = 256,
              disk_mb = 256 }  # all a task writes, in its /task and its /tmp each (tmpfs)
    max_output_bytes = 1048576      # stdout and stderr, each

    [drivers.command.programs.wc]   # the name a task asks for: a fixed argv, typed parameters
    argv = ["/usr/bin/wc"]
    params.lines = { type = "flag", arg = "-l" }
    params.file = { type = "file" } # a file of the task's scratch dir, after `--`
    # other types: { type = "integer", min = 1, max = 9 }, { type = "string", max_length = 64 }

    [drivers.http]                  # only with "http" in [worker] drivers
    endpoints = { "llama-3-8b" = "http://127.0.0.1:8000/v1/completions" }  # model -> URL; "*" any
    devices = { "llama-3-8b" = [0] } # the GPUs (NVML indexes) its server runs on: its tasks
                                    # count as using them (commands are not given them)
    # or a table per model, with its credentials (sent to it alone) and health check:
    # [drivers.http.endpoints.gpt] url = "https://api.example/v1", api_key_env = "EXAMPLE_KEY"
    # (or api_key_file = "secrets/key", mode 0600, relative to this file's folder),
    # headers_env = { "OpenAI-Organization" = "EXAMPLE_ORG" }, health_path = "/health"
    timeout_s = 120
    max_response_bytes = 4194304

    [workload]                      # the ad's live load (CPU, RAM, GPU use and memory) and loaded
    interval_s = 10                 # models, sampled this often (0.1..3600 s) and republished
    threshold = 0.1                 # when a load moves this much (0..1 of capacity) or the
                                    # models change; at most once per 5 s in any case

    [network]
    download_mbps = 1000
    upload_mbps = 100

    [override]                      # replaces what was detected
    cpu_model = "AMD EPYC 7763"
    cpu_cores = 64
    ram_gb = 512
    disk_gb = 2000
    gpus = [{ model = "NVIDIA A100-SXM4-80GB", vram_gb = 80 }]

    [dht]                           # this node's DHT limits, as a gate's (id_bits, stranger_rate,
    id_bits = 15                    # ...; [dht.store] max_per_publisher, ...): listed in
                                    # p2psched/dht/config_file.py
"""

from __future__ import annotations

import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from p2psched.dht.config_file import DhtSettings, describe
from p2psched.resources.detect import Detected
from p2psched.resources.driver_inputs import KNOWN_DRIVERS as KNOWN_DRIVERS
from p2psched.resources.profile import Gpu, Profile
from p2psched.wire.codec import decode
from p2psched.wire.deal import MAX_COMMIT_MESSAGE
from p2psched.worker.config_values import (
    REFUSED,
    TABLE,
    finite,
    interval,
    refuse,
    seconds,
    share,
)
from p2psched.worker.driver_config import ANY_MODEL as ANY_MODEL
from p2psched.worker.driver_config import CONFIG_FOLDER
from p2psched.worker.driver_config import CommandDriverConfig as CommandDriverConfig
from p2psched.worker.driver_config import CommandLimits as CommandLimits
from p2psched.worker.driver_config import CommandParam as CommandParam
from p2psched.worker.driver_config import CommandProgram as CommandProgram
from p2psched.worker.driver_config import DriverTable as DriverTable
from p2psched.worker.driver_config import HttpDriverConfig as HttpDriverConfig
from p2psched.worker.driver_config import HttpEndpoint as HttpEndpoint
from p2psched.worker.policy import DriverCaps, PriorityPrices, SchedulerPolicy, node_id_of_hex

MAX_GRACE_S = 86400.0  # a scheduler gone a day is gone
# The wording of pydantic's own refusals, where a table's types refuse before our checks run.
_REASONS = {"model_type": "must be a table", "string_type": "must be text"}
_REASONS["dict_type"] = _REASONS["model_type"]  # (a table of named tables, like [models.NAME])


class ConfigError(ValueError):
    """A worker config the worker cannot start with; the message says where and why."""


# -- checks of single values, each refusing in the operator's words ----------------------------


def _tasks(least: int) -> BeforeValidator:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not least <= v <= 1024:
            raise refuse(f"must be a whole number of tasks, {least}..1024, not {v!r}")
        return v

    return BeforeValidator(check)


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and 0 < len(x) <= 128 for x in v):
        raise refuse(f"must be a list of names, not {v!r}")
    return tuple(v)


def _drivers(v: Any) -> tuple[str, ...]:
    names = _names(v)
    for d in names:
        if d not in KNOWN_DRIVERS:
            raise refuse(f"unknown driver {d!r}; known: {', '.join(KNOWN_DRIVERS)}")
    return names


def _labels(v: Any) -> Any:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise refuse('must be a table of text values, like { region = "eu" }')
    return v


def _cores(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise refuse(f"must be a whole number >= 1, not {v!r}")
    return v


def _gpu_list(v: Any) -> Any:
    if not isinstance(v, list):
        raise refuse('must be a list like [{ model = "...", vram_gb = N }]')
    return v


def _multiplier(v: Any) -> float:
    if finite(v) == 0:
        raise refuse("must be more than 0 (a multiple of min_price)")
    return float(v)


def _node_ids(v: Any) -> frozenset[bytes]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise refuse('must be a list of node ids, like ["3fa2...", ...] (64 hex digits each)')
    ids = set()
    for i, text in enumerate(v):
        node_id = node_id_of_hex(text)
        if node_id is None:
            raise refuse(f"{text[:80]!r} is not a node id (64 hex digits)", i)
        ids.add(node_id)
    return frozenset(ids)


_Amount = Annotated[float, BeforeValidator(finite)]
_Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
_NodeIds = Annotated[frozenset[bytes], BeforeValidator(_node_ids)]
_Multiplier = Annotated[float, BeforeValidator(_multiplier)]


class WorkloadSettings(BaseModel):
    """[workload]: how often the ad's live load is sampled, and how far it must move to be
    republished (`worker.workload`)."""

    model_config = TABLE

    interval_s: Annotated[float, BeforeValidator(interval)] = 10.0
    threshold: Annotated[float, BeforeValidator(share)] = 0.1


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """A worker's settings, checked: what its file said (`load_config`), else the defaults.
    The driver settings are the file's tables as they are; the rest is flattened for the roles."""

    slots: int | None = None  # None: one per GPU (at least one)
    queue_depth: int = 4
    max_message_bytes: int = MAX_COMMIT_MESSAGE  # from a scheduler that said what it is
    receive_budget_bytes: int = 2 * MAX_COMMIT_MESSAGE  # ... by all of them at once
    drivers: tuple[str, ...] = ("echo",)
    min_price: float = 0.0
    models: tuple[str, ...] = ()
    loaded_models: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    download_mbps: float = 0.0
    upload_mbps: float = 0.0
    override: dict[str, Any] = field(default_factory=dict)
    scheduler_grace_s: float = 60.0
    challenge_interval_s: float = 600.0  # (`worker.challenge.INTERVAL_S`)
    priority_prices: PriorityPrices = PriorityPrices()
    schedulers: SchedulerPolicy = SchedulerPolicy()  # as the file says inline
    schedulers_file: Path | None = None  # and what this file lists, read while it runs
    echo_driver: DriverTable = field(default_factory=DriverTable)
    sleep_driver: DriverTable = field(default_factory=DriverTable)
    command_driver: CommandDriverConfig = field(default_factory=CommandDriverConfig)
    http_driver: HttpDriverConfig = field(default_factory=HttpDriverConfig)
    dht: DhtSettings = field(default_factory=DhtSettings)  # the node's, which the worker runs
    workload: WorkloadSettings = WorkloadSettings()  # the ad's live load: how it is followed

    def driver_caps(self) -> dict[str, DriverCaps]:
        """Each driver's caps on a task: its table's, or the defaults."""
        tables = (self.echo_driver, self.sleep_driver, self.command_driver, self.http_driver)
        return {name: t.caps() for name, t in zip(("echo", "sleep", "command", "http"), tables)}

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
            # The least it takes: any scheduler may ask at the cheapest priority band.
            min_price=self.min_price * self.priority_prices.lowest,
            drivers=self.drivers,
            free_slots=self.slot_count(detected),
            labels=self.labels,
            addresses=addresses,
        )


# -- the file's tables --------------------------------------------------------------------------


class _Multipliers(BaseModel):
    model_config = TABLE

    low: _Multiplier = 1.0
    normal: _Multiplier = 1.0
    high: _Multiplier = 1.0


class _WorkerTable(BaseModel):
    model_config = TABLE

    slots: Annotated[int, _tasks(1)] | None = None
    queue: Annotated[int, _tasks(0)] = 4
    max_message_bytes: int = Field(default=MAX_COMMIT_MESSAGE, ge=64 << 10, le=MAX_COMMIT_MESSAGE)
    receive_budget_bytes: int = Field(default=2 * MAX_COMMIT_MESSAGE, ge=64 << 10, le=1 << 30)
    drivers: Annotated[tuple[str, ...], BeforeValidator(_drivers)] = ("echo",)
    min_price: _Amount = 0.0
    priority_multipliers: _Multipliers = _Multipliers()
    scheduler_grace_s: Annotated[float, seconds(MAX_GRACE_S)] = 60.0
    challenge_interval_s: Annotated[float, seconds(MAX_GRACE_S)] = 600.0
    models: _Names = ()
    loaded_models: _Names = ()
    labels: Annotated[dict[str, str], BeforeValidator(_labels)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _loaded_are_installed(self) -> _WorkerTable:
        for m in self.loaded_models:
            if m not in self.models:
                raise refuse(f"{m!r} is loaded but not among models", "loaded_models")
        return self


class _NetworkTable(BaseModel):
    model_config = TABLE

    download_mbps: _Amount = 0.0
    upload_mbps: _Amount = 0.0


class _Gpu(BaseModel):
    model_config = TABLE

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
            raise refuse('must be { model = "...", vram_gb = N }')
        if "vram_gb" not in g:
            raise refuse("must be a finite number >= 0, not None", "vram_gb")
        return g


class _OverrideTable(BaseModel):
    model_config = TABLE

    cpu_model: str | None = None
    cpu_cores: Annotated[int, BeforeValidator(_cores)] | None = None
    ram_gb: _Amount | None = None
    disk_gb: _Amount | None = None
    gpus: Annotated[list[_Gpu], BeforeValidator(_gpu_list)] | None = None


class _SchedulersTable(BaseModel):
    model_config = TABLE

    allow: _NodeIds | None = None
    deny: _NodeIds = frozenset()
    serve: Literal["anyone", "allowed"] | None = None
    file: str | None = None
    slots: Annotated[int, _tasks(1)] | None = None
    spend_per_hour: _Amount | None = None

    @model_validator(mode="after")
    def _serve_agrees(self) -> _SchedulersTable:
        if self.serve == "anyone" and self.allow is not None:
            raise refuse(
                'allow lists the schedulers to serve, but serve = "anyone" serves them all; '
                "remove one of the two",
                "serve",
            )
        return self

    def policy(self) -> SchedulerPolicy:
        only_allowed = self.serve == "allowed" or (self.serve is None and self.allow is not None)
        spend = self.spend_per_hour
        return SchedulerPolicy(
            only_allowed,
            self.allow or frozenset(),
            self.deny,
            self.slots,
            math.inf if spend is None else spend,
        )


class _DriverTables(BaseModel):
    model_config = TABLE

    command: CommandDriverConfig = CommandDriverConfig()
    http: HttpDriverConfig = HttpDriverConfig()
    echo: DriverTable = DriverTable()
    sleep: DriverTable = DriverTable()

    @model_validator(mode="before")
    @classmethod
    def _tables(cls, tables: Any) -> Any:
        if not isinstance(tables, dict):
            raise refuse("must hold tables like [drivers.command]")
        return tables


class _WorkerFile(BaseModel):
    model_config = TABLE

    worker: _WorkerTable = _WorkerTable()
    schedulers: _SchedulersTable = _SchedulersTable()
    drivers: _DriverTables = _DriverTables()
    network: _NetworkTable = _NetworkTable()
    override: _OverrideTable = _OverrideTable()
    dht: DhtSettings = DhtSettings()
    workload: WorkloadSettings = WorkloadSettings()

    @model_validator(mode="after")
    def _settings_are_for_enabled_drivers(self) -> _WorkerFile:
        # Settings for a driver that is off are most likely a driver the operator meant to enable.
        for name in sorted(self.drivers.model_fields_set):
            if name not in self.worker.drivers:
                raise refuse(
                    f"the {name} driver is not enabled; add {name!r} to [worker] drivers to "
                    "enable it, or remove this table",
                    "drivers",
                    name,
                )
        return self


TABLES = tuple(_WorkerFile.model_fields)  # the file's, as a node's config holds them too


def load_config(path: Path) -> WorkerConfig:
    """The worker config at `path`, checked; `ConfigError` names the field and the reason."""
    return check_config(read_toml(path), path)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at `path`; `ConfigError` says why it cannot be read."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; pass the path of a node's config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def check_config(doc: dict[str, Any], path: Path) -> WorkerConfig:
    """A worker config read from `path` (its tables: a node's config's others left out)."""
    try:
        file = _WorkerFile.model_validate(doc, context={CONFIG_FOLDER: path.parent})
    except ValidationError as e:
        raise ConfigError(f"{path}: {said(first_error(e))}") from None
    w = file.worker
    config = WorkerConfig(
        slots=w.slots,
        queue_depth=w.queue,
        max_message_bytes=w.max_message_bytes,
        receive_budget_bytes=w.receive_budget_bytes,
        drivers=w.drivers,
        min_price=w.min_price,
        models=w.models,
        loaded_models=w.loaded_models,
        labels=tuple(sorted(w.labels.items())),
        download_mbps=file.network.download_mbps,
        upload_mbps=file.network.upload_mbps,
        override=file.override.model_dump(exclude_unset=True),
        scheduler_grace_s=w.scheduler_grace_s,
        challenge_interval_s=w.challenge_interval_s,
        priority_prices=PriorityPrices(**w.priority_multipliers.model_dump()),
        schedulers=file.schedulers.policy(),
        schedulers_file=_schedulers_file(path, file.schedulers.file),
        echo_driver=file.drivers.echo,
        sleep_driver=file.drivers.sleep,
        command_driver=file.drivers.command,
        http_driver=file.drivers.http,
        dht=file.dht,
        workload=file.workload,
    )
    # What the worker will advertise must be what every asker accepts: check it now, against
    # the same schema and size limit, rather than be silently left out of every answer later.
    sample = config.profile(Detected("CPU", 1, 1.0, 1.0, (), 0.0, 0.0), addresses=("0.0.0.0:0",))
    try:
        Profile.from_wire(decode(sample.encode()))
    except ValueError as e:  # SchemaError, or the size limit
        raise ConfigError(f"{path}: {e}") from None
    return config


def _schedulers_file(config: Path, name: str | None) -> Path | None:
    """[schedulers] file, found from the config's folder: it must be there, and readable, when
    the worker starts (a name mistyped would leave its lists out unseen)."""
    if name is None:
        return None
    path = config.parent / name
    try:
        path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config}: [schedulers] file: cannot read {path} ({e})") from None
    return path


# -- pydantic's errors in the file's terms -----------------------------------------------------


def first_error(e: ValidationError) -> ErrorDetails:
    """The one error shown: a name the file misspelled before any value (its value's check may
    be moot once the name is right)."""
    errors = e.errors()
    return next((err for err in errors if err["type"] == "extra_forbidden"), errors[0])


def said(err: ErrorDetails, root: type[BaseModel] | None = None) -> str:
    """One error as the file shows it: "[drivers.http] endpoints.m: reason" (`root`: its model)."""
    if err["loc"][:1] == ("dht",):  # the node's table, said as a gate's config says it
        return describe({**err, "loc": err["loc"][1:]})
    ctx = err.get("ctx") or {}
    table, keys, model = _place((*err["loc"], *ctx.get("at", ())), root or _WorkerFile)
    where = f"[{'.'.join(table)}]" + (f" {_key_path(keys)}" if keys else "")
    if err["type"] == REFUSED:
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
    loc: tuple[str | int, ...], root: type[BaseModel]
) -> tuple[tuple[str, ...], tuple[str | int, ...], type[BaseModel]]:
    """Where `loc` is in the file: its table, the key path within it, and the model of that
    table (for a table the file may not have: the model of the table that would hold it).
    A field that maps names to tables, like a node's [models.NAME], takes the name too."""
    model, table, i = root, tuple[str, ...](), 0
    while i < len(loc):
        if not _holds_tables(model):
            return table, loc[i:], model
        table += (str(loc[i]),)
        known = model.model_fields.get(str(loc[i]))
        annotation = known.annotation if known is not None else None
        named = _named_tables(annotation)
        if named is not None and i + 1 < len(loc):
            table, model, i = (*table, str(loc[i + 1])), named, i + 2
            continue
        inner = _table_model(annotation)
        if inner is None:
            return table, loc[i + 1 :], model
        model, i = inner, i + 1
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


def _named_tables(annotation: Any) -> type[BaseModel] | None:
    """The model of the tables a `dict[str, Model]` field holds, one per name."""
    named = typing.get_origin(annotation) is dict  # (then its args are the key's and value's)
    return _table_model(typing.get_args(annotation)[1]) if named else None


def _holds_tables(model: type[BaseModel]) -> bool:
    """A table whose every field is a table: a name in it is a table's, like [drivers.http]."""
    fields = model.model_fields.values()
    return all(_table_model(f.annotation) or _named_tables(f.annotation) for f in fields)


def _key_path(keys: tuple[str | int, ...]) -> str:
    path = ""
    for k in keys:
        path += f"[{k}]" if isinstance(k, int) else f".{k}" if path else k
    return path
