"""The Task Instances registered with this worker (the design documents' `/ti/register`): model
servers with an OpenAI-compatible API at host:port (vLLM, llama.cpp's server, Ollama, ...) whose
models the worker serves through its http driver and advertises in its ad.

Owns: the check a server passes before it is registered (`worker.health`: it answers, and
`GET /v1/models` lists what it serves), which server each registered model goes to (`routes`,
which the http driver reads before its config's endpoints), the models of instances removed
while it runs (whose tasks it refuses at once: `removed`), and
`<data-dir>/task_instances.json`, which keeps them across restarts. Promises: a model goes to
one registered server at most; a refusal says why in the design document's words ("Connection
refused", "Health check failed: ..."); the file is rewritten whole (mode 0600) on every
change, so a restart finds what was registered last.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from p2psched.home import write_private
from p2psched.resources.instance import instance_id
from p2psched.worker.health import CHECK_TIMEOUT_S, Unhealthy, check_server

INSTANCES_FILE = "task_instances.json"
MAX_MODELS = 32  # registered on one worker: its ad holds at most 64 model names, in one record
# A DNS name (as the document allows "worker1.example.com"): letters, digits, hyphens, dots.
_HOST_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


class InstanceError(Exception):
    """A Task Instance that cannot be registered or removed; the message says why."""


@dataclass(frozen=True, slots=True)
class Registered:
    """One model of one registered server."""

    host: str
    port: int
    model: str

    @property
    def server(self) -> str:
        """The server's base URL (an IPv6 literal in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """Where the http driver posts this model's tasks."""
        return f"{self.server}/v1/completions"


def check_address(host: str, port: int) -> None:
    """Refuse a host that is neither an IP address nor a DNS name, or a port out of range."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.fullmatch(host):
            raise InstanceError(
                f"host {host[:80]!r} is neither an IP address nor a host name"
            ) from None
    if not 1 <= port <= 65535:
        raise InstanceError(f"port {port} is not 1..65535")


async def probe(host: str, port: int, timeout_s: float = CHECK_TIMEOUT_S) -> tuple[str, ...]:
    """The models the server at host:port serves, from its `GET /v1/models`; `InstanceError`
    if it does not answer, or answers anything but OpenAI's list of models."""
    check_address(host, port)
    return await listed_models(Registered(host, port, "").server + "/v1/models", timeout_s)


async def listed_models(
    url: str, timeout_s: float = CHECK_TIMEOUT_S, headers: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The models a server's `GET /v1/models` at `url` lists, asked with `headers` (an
    endpoint's credentials); `InstanceError` as `probe`."""
    # No proxy from the environment: the operator named the server, and only it is asked.
    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            return await check_server(client, url, "models", headers=headers, timeout_s=timeout_s)
        except Unhealthy as e:
            raise InstanceError(str(e)) from None


class InstanceBook:
    """This worker's registered Task Instances, one per model, kept in its data dir."""

    def __init__(self, data_dir: Path, worker: bytes) -> None:
        self.path = data_dir / INSTANCES_FILE
        self.worker = worker
        self._by_model: dict[str, Registered] = {}
        # What the http driver reads: model -> endpoint, changed in place as instances come
        # and go (a task that started keeps the endpoint it was given).
        self.routes: dict[str, str] = {}
        # Models whose instance was removed while the worker runs -> that instance's id:
        # schedulers may still hold its old ad for a while, and their tasks are refused.
        self.removed: dict[str, str] = {}
        if self.path.exists():
            for r in self._load():
                self._put(r)

    def __iter__(self) -> Iterator[Registered]:
        return iter(sorted(self._by_model.values(), key=lambda r: r.model))

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_model))

    def id_of(self, model: str) -> str:
        return instance_id(self.worker, model)

    def add(self, host: str, port: int, models: tuple[str, ...]) -> list[Registered]:
        """Register `models` as served by host:port. Registering a server again takes what it
        lists now; a model another registered server serves is refused."""
        for model in models:
            other = self._by_model.get(model)
            if other is not None and (other.host, other.port) != (host, port):
                raise InstanceError(
                    f"model {model!r} is already served by Task Instance {self.id_of(model)} "
                    f"at {other.server}; remove it first"
                )
        kept = {m: r for m, r in self._by_model.items() if (r.host, r.port) != (host, port)}
        if len(kept) + len(models) > MAX_MODELS:
            raise InstanceError(
                f"this worker would serve over {MAX_MODELS} registered models, more than its "
                "ad holds; remove some first"
            )
        for gone in set(self._by_model) - set(kept):
            self._drop(gone)
        added = [Registered(host, port, m) for m in models]
        for r in added:
            self._put(r)
        self._save()
        return added

    def find(self, ti_uuid: str) -> Registered | None:
        return next((r for r in self._by_model.values() if self.id_of(r.model) == ti_uuid), None)

    def remove(self, registered: Registered) -> None:
        self._drop(registered.model)
        self.removed[registered.model] = self.id_of(registered.model)
        self._save()

    def _put(self, r: Registered) -> None:
        self.removed.pop(r.model, None)
        self._by_model[r.model] = r
        self.routes[r.model] = r.endpoint

    def _drop(self, model: str) -> None:
        del self._by_model[model]
        del self.routes[model]

    def _load(self) -> list[Registered]:
        try:
            listed = json.loads(self.path.read_text())["instances"]
            loaded = [Registered(str(i["host"]), int(i["port"]), str(i["model"])) for i in listed]
            for r in loaded:
                check_address(r.host, r.port)
        except (OSError, ValueError, KeyError, TypeError, InstanceError) as e:
            raise InstanceError(
                f"{self.path}: not the Task Instances this worker registered ({e}); "
                "fix it or remove it (then register them again)"
            ) from None
        return loaded

    def _save(self) -> None:
        kept = [{"host": r.host, "port": r.port, "model": r.model} for r in self]
        write_private(self.path, json.dumps({"instances": kept}, indent=1).encode())


def served(config_models: tuple[str, ...], book: InstanceBook | None) -> tuple[str, ...]:
    """The models a worker advertises: its config's, then its registered instances'."""
    registered = book.models if book is not None else ()
    return tuple(dict.fromkeys([*config_models, *registered]))
