"""A node's config file (TOML, `--config` of `p2psched gate`, `node` and `worker join`): the
tables every node reads, [server] (its control API and OpenAI gateway), [database] (its state),
[models.NAME] (what a task for that model needs) and [reputation] (when its scheduler stops
using a worker whose results or claims did not hold), beside its role's own tables, which are
read as before: a gate's [relay] (`gate/config.py`), a worker's [worker], [schedulers],
[drivers.*], [network], [override], [workload] (`worker/config.py`), and every node's [dht]
(`dht/config_file.py`).

Owns: those three tables as strict pydantic models (a `true` is no number, an unknown table or
key is refused), which tables each role reads, and `load_node_config`.
Promises: a bad file raises `NodeConfigError` (the worker's tables: `ConfigError`) naming the
file, the table and key, and the reason, before the node starts; a table of another role is
refused naming the command that reads it; a file that says nothing changes nothing.

    [server]
    host = "127.0.0.1"          # the control API's address (--api-host wins; beyond loopback
    port = 8080                 # only with --api-remote); its port (--api-port wins; 0: any)
    read_timeout_s = 300        # a connection that sends nothing this long is closed (default:
                                # never; also while it waits for an answer: at least
                                # request_timeout_s)
    keep_alive_s = 5            # an idle connection between requests is closed after this
    session_idle_s = 60         # a signed session unused this long ends (--api-session-idle)
    sessions = 1024             # signed sessions held at once (--api-sessions)
    request_timeout_s = 120     # the OpenAI gateway: a request's task, at most
    max_request_bytes = 1048576 # ... and its body (413 above it)
    max_price = 0.1             # what a task for a model (from the gateway, /queue/submit or
                                # /api/v1/tasks) may pay its worker, at most, in the unit of
                                # workers' min_price; a [models.NAME] max_price wins (inf: no cap)

    [database]
    path = "state.db"           # the node's state (SQLite): from this file's folder
                                # (default: state.db in the data dir)

    [models."llama-3-8b"]       # a task for this model, from the gateway, /queue/submit or
    vram_gb = 16                # /api/v1/tasks, goes only to a worker with all of these:
    gpus = 1                    # GiB on its largest GPU, GPUs, GPU family (gpu = "A100"),
    ram_gb = 32                 # RAM in GiB, CPU cores (cpus = 8),
    driver = "http"             # the driver it runs with (the gateway's: http, always)
    timeout_s = 300             # its time limit (default: [server] request_timeout_s on the
                                # gateway, 10 minutes elsewhere; at most read_timeout_s)
    max_output_tokens = 512     # the gateway's max_tokens when a request gives none; more,
                                # in all its answers (n x max_tokens; best_of x), is refused
    max_price = 0.05            # what one of its tasks may pay (default: [server] max_price)

    [reputation]                # a worker whose results or claims did not hold is skipped:
    max_disputes = 1            # after this many disputed results (0: never skipped for them),
    max_failed_challenges = 1   # or this many failed capacity challenges (0: never),
    skip_s = 604800             # for this long (a week), counted again from then
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, model_validator

from p2psched.dht.config_file import DhtSettings, describe
from p2psched.gate.config import GateConfig, GateConfigError, check_gate_config
from p2psched.gate.relay import RelayLimits
from p2psched.resources.driver_inputs import KNOWN_DRIVERS
from p2psched.scheduler.job.models import Resources
from p2psched.scheduler.worker_views import DEFAULT_RULES, ReputationRules
from p2psched.wire.messages import MAX_TASK_TIMEOUT_S
from p2psched.worker.config import (
    TABLES,
    WorkerConfig,
    check_config,
    first_error,
    read_toml,
    said,
)
from p2psched.worker.config_values import TABLE, byte_cap, refuse, seconds

# The tables each role's command reads beside the node's own, in the order errors list them.
ROLE_TABLES = {"gate": tuple(GateConfig.model_fields), "node": ("dht",), "worker": TABLES}
COMMANDS = {"gate": "p2psched gate", "node": "p2psched node", "worker": "p2psched worker join"}
NODE_TABLES = ("server", "database", "models", "reputation")
GATEWAY_TIMEOUT_S = 120.0  # a gateway request's task, at most (the http driver's time limit)
GATEWAY_MAX_BYTES = 1 << 20  # a gateway request's body: prompts and messages, not files
# What a task for a model may pay, unless the config says: 50 times a devnet worker's dearest
# normal price, 10 times the README's worker's, and far below what a greedy worker may ask.
GATEWAY_MAX_PRICE = 0.1


class NodeConfigError(ValueError):
    """A node config the node cannot start with; the message says where and why."""


def _port(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
        raise refuse(f"must be a port number, 0..65535 (0: any free one), not {v!r}")
    return v


def _host(v: Any) -> str:
    try:
        # (text alone: ipaddress reads a number, or true, as an address: 0 is 0.0.0.0)
        if not isinstance(v, str):
            raise ValueError(v)
        return str(ipaddress.ip_address(v.strip("[]")))
    except ValueError:
        raise refuse(f"must be an IP address, like 127.0.0.1, not {v!r}") from None


def _count(most: int) -> BeforeValidator:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
            raise refuse(f"must be a whole number, 1..{most}, not {v!r}")
        return v

    return BeforeValidator(check)


def _price(v: Any) -> float:
    if isinstance(v, str) and v.strip().lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
        raise refuse(f'must be a price per task, a number >= 0 (or "inf": no cap), not {v!r}')
    return float(v)


def _driver(v: Any) -> str:
    if v not in KNOWN_DRIVERS:
        raise refuse(f"unknown driver {v!r}; known: {', '.join(KNOWN_DRIVERS)}")
    return str(v)


_Seconds = Annotated[float, seconds(MAX_TASK_TIMEOUT_S)]


class ServerTable(BaseModel):
    """[server]: where the control API listens, its connections' timeouts, its signed
    sessions, and the OpenAI gateway's bounds on a request."""

    model_config = TABLE

    host: Annotated[str, BeforeValidator(_host)] | None = None  # None: loopback
    port: Annotated[int, BeforeValidator(_port)] | None = None
    read_timeout_s: _Seconds | None = None  # None: a connection may wait to send for ever
    keep_alive_s: _Seconds = 5.0
    session_idle_s: _Seconds | None = None  # None: --api-session-idle's default
    sessions: Annotated[int, _count(1 << 20)] | None = None
    request_timeout_s: _Seconds = GATEWAY_TIMEOUT_S
    max_request_bytes: Annotated[int, byte_cap(64 << 20, "a prompt, not a file")] = (
        GATEWAY_MAX_BYTES
    )
    max_price: Annotated[float, BeforeValidator(_price)] = GATEWAY_MAX_PRICE

    @model_validator(mode="after")
    def _reads_outlast_requests(self) -> ServerTable:
        # Hypercorn's read timeout runs while a request waits for its answer too: a shorter
        # one would cut every gateway request that takes longer.
        read, request = self.read_timeout_s, self.request_timeout_s
        if read is not None and read < request:
            raise refuse(
                f"{read:g} s would cut gateway requests short: make it at least "
                f"request_timeout_s ({request:g} s)",
                "read_timeout_s",
            )
        return self


class DatabaseTable(BaseModel):
    """[database]: where the node keeps its state."""

    model_config = TABLE

    path: str | None = None  # None: state.db in the data dir


def _strikes(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1_000_000:
        raise refuse(f"must be a whole number, 0..1000000 (0: never skipped for it), not {v!r}")
    return v


def _skip_s(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 10 * 365 * 86400:
        raise refuse(f"must be seconds, 0..315360000 (ten years), not {v!r}")
    return float(v)


_Strikes = Annotated[int, BeforeValidator(_strikes)]


class ReputationTable(BaseModel):
    """[reputation]: after how many disputed results, or failed capacity challenges, the
    scheduler skips a worker, and for how long."""

    model_config = TABLE

    max_disputes: _Strikes = DEFAULT_RULES.max_disputes
    max_failed_challenges: _Strikes = DEFAULT_RULES.max_failed_challenges
    skip_s: Annotated[float, BeforeValidator(_skip_s)] = DEFAULT_RULES.skip_s

    def rules(self) -> ReputationRules:
        return ReputationRules(self.max_disputes, self.skip_s, self.max_failed_challenges)


class ModelTable(BaseModel):
    """[models.NAME]: what a worker must have to take a task for the model, and the limits of
    such a task. Its resources are checked as a job spec's `resources` are."""

    model_config = TABLE

    gpu: str | None = None
    gpus: int | None = None
    vram_gb: float | int | None = None
    ram_gb: float | int | None = None
    cpus: int | None = None
    driver: Annotated[str, BeforeValidator(_driver)] | None = None
    timeout_s: _Seconds | None = None
    max_output_tokens: Annotated[int, _count(1 << 24)] | None = None
    max_price: Annotated[float, BeforeValidator(_price)] | None = None  # None: [server]'s

    @model_validator(mode="after")
    def _resources_as_a_job_gives_them(self) -> ModelTable:
        try:
            Resources.model_validate(self.resources())
        except ValidationError as e:
            err = e.errors()[0]
            reason = err["msg"].replace("Input should be", "must be", 1)
            raise refuse(f"{reason}, not {err['input']!r}", *map(str, err["loc"])) from None
        return self

    def resources(self) -> dict[str, Any]:
        """The job spec's `resources` these requirements are (the model's name not in it)."""
        fields = ("gpu", "gpus", "vram_gb", "ram_gb", "cpus")
        return {f: v for f in fields if (v := getattr(self, f)) is not None}


class _NodeTables(BaseModel):
    model_config = TABLE

    server: ServerTable = ServerTable()
    database: DatabaseTable = DatabaseTable()
    models: dict[str, ModelTable] = Field(default_factory=dict)
    reputation: ReputationTable = ReputationTable()

    @model_validator(mode="after")
    def _models_can_be_asked_for(self) -> _NodeTables:
        read = self.server.read_timeout_s
        for name, wants in self.models.items():
            try:
                Resources.model_validate({"model": name})
            except ValidationError as e:
                reason = e.errors()[0]["msg"].replace("Value error, ", "")
                raise refuse(
                    f"not a model name a task can ask for: {reason}", "models", name
                ) from None
            if read is not None and wants.timeout_s is not None and wants.timeout_s > read:
                raise refuse(
                    f"{wants.timeout_s:g} s: the gateway's requests for it would be cut at "
                    f"[server] read_timeout_s ({read:g} s)",
                    "models",
                    name,
                    "timeout_s",
                )
        return self


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A node's settings, checked: what its file said, else the defaults. `worker` is None for
    a command that runs no worker; `relay` is a gate's."""

    server: ServerTable = ServerTable()
    database: Path | None = None  # None: state.db in the data dir
    models: Mapping[str, ModelTable] = field(default_factory=dict)
    reputation: ReputationRules = DEFAULT_RULES
    dht: DhtSettings = DhtSettings()
    relay: RelayLimits = RelayLimits()
    worker: WorkerConfig | None = None


def model_job(
    wants: ModelTable | None,
    kind: str,
    model: str,
    driver: str,
    task_input: Any,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The spec of a one-task job for `model` (named `name`, made a job name, else after `kind`
    and the model; its task telling the predictor `metadata`): what its [models.NAME] table,
    `wants`, asks of a worker, its time limit."""
    named = re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:64] if name else None
    spec: dict[str, Any] = {
        "name": named or f"{kind}-" + re.sub(r"[^A-Za-z0-9._-]+", "-", model)[:48],
        "driver": driver,
        "resources": {**(wants.resources() if wants else {}), "model": model},
        "tasks": [{"input": task_input, "metadata": metadata}],
    }
    if wants is not None and wants.timeout_s is not None:
        spec["timeout"] = wants.timeout_s
    return spec


def load_node_config(path: Path | None, role: str) -> NodeConfig:
    """The config at `path` for a node in `role` ("gate", "node" or "worker"), checked; the
    defaults without one."""
    if path is None:
        return NodeConfig(worker=WorkerConfig() if role == "worker" else None)
    doc = read_toml(path)
    known = (*ROLE_TABLES[role], *NODE_TABLES)
    for name in doc:
        if name in known:
            continue
        readers = [COMMANDS[r] for r, tables in ROLE_TABLES.items() if name in tables]
        if readers:
            raise NodeConfigError(
                f"{path}: [{name}] is read by {' and '.join(readers)}, not by {COMMANDS[role]}; "
                "remove it from this file"
            )
        listed = ", ".join(f"[{t}]" for t in known).replace("[models]", "[models.NAME]")
        raise NodeConfigError(f"{path}: [{name}]: unknown table; known: {listed}")
    try:
        tables = _NodeTables.model_validate({k: v for k, v in doc.items() if k in NODE_TABLES})
    except ValidationError as e:
        raise NodeConfigError(f"{path}: {said(first_error(e), _NodeTables)}") from None
    rest = {k: v for k, v in doc.items() if k not in NODE_TABLES}
    config = NodeConfig(
        server=tables.server,
        database=_database(path, tables.database.path),
        models=tables.models,
        reputation=tables.reputation.rules(),
    )
    if role == "worker":
        worker = check_config(rest, path)
        return replace(config, worker=worker, dht=worker.dht)
    if role == "gate":
        try:
            gate: GateConfig = check_gate_config(rest)
        except GateConfigError as e:
            raise NodeConfigError(f"{path}: {e}") from None
        return replace(config, relay=gate.relay, dht=gate.dht)
    try:
        dht = DhtSettings.model_validate(rest.get("dht", {}))
    except ValidationError as e:
        raise NodeConfigError(f"{path}: {describe(first_error(e))}") from None
    return replace(config, dht=dht)


def database_of(path: Path) -> Path | None:
    """The [database] path of the config at `path` (None: it gives none), for a command that
    reads the state of a node that is not running; the file's other tables are its roles'."""
    doc = read_toml(path)
    try:
        tables = _NodeTables.model_validate({"database": doc.get("database", {})})
    except ValidationError as e:
        raise NodeConfigError(f"{path}: {said(first_error(e), _NodeTables)}") from None
    return _database(path, tables.database.path)


def _database(config: Path, name: str | None) -> Path | None:
    """[database] path, found from the config's folder: its folder must be there when the
    node starts (a name mistyped would start a node with no past)."""
    if name is None:
        return None
    if not name:
        raise NodeConfigError(f"{config}: [database] path: must name a file, not be empty")
    path = config.parent / Path(name).expanduser()
    if path.is_dir():
        raise NodeConfigError(f"{config}: [database] path: {path} is a folder, not a file")
    if not path.parent.is_dir():
        raise NodeConfigError(
            f"{config}: [database] path: {path.parent} is not a folder (create it first)"
        )
    return path
