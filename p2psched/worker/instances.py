"""The Task Instances registered with this worker (the design documents' `/ti/register`): model
servers with an OpenAI-compatible API at host:port (vLLM, llama.cpp's server, Ollama, ...) whose
models the worker serves through its http driver and advertises in its ad.

Owns: the check a server passes before it is registered (it answers, and `GET /v1/models` lists
what it serves), which server each registered model goes to (`routes`, which the http driver
reads before its config's endpoints), and `<data-dir>/task_instances.json`, which keeps them
across restarts. Promises: a model goes to one registered server at most; a refusal says why in
the design document's words ("Connection refused", "Health check failed: ..."); the file is
rewritten whole (mode 0600) on every change, so a restart finds what was registered last.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from p2psched.home import write_private
from p2psched.resources.instance import instance_id

INSTANCES_FILE = "task_instances.json"
PROBE_TIMEOUT_S = 5.0
MAX_MODELS = 32  # registered on one worker: its ad holds at most 64 model names, in one record
_MODEL_LIST_BYTES = 256 << 10  # of a `GET /v1/models` answer, read at most
_MODEL_NAME = 128  # as an ad's model names may be
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


async def probe(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, ...]:
    """The models the server at host:port serves, from its `GET /v1/models`; `InstanceError`
    if it does not answer, or answers anything but OpenAI's list of models."""
    check_address(host, port)
    return await listed_models(Registered(host, port, "").server + "/v1/models", timeout_s)


async def listed_models(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, ...]:
    """The models a server's `GET /v1/models` at `url` lists; `InstanceError` as `probe`."""
    # No proxy from the environment: the operator named the server, and only it is asked.
    # `timeout_s` bounds the whole check, not each read: a server dripping its answer a byte
    # at a time would otherwise hold the request for days.
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
        with trio.move_on_after(timeout_s) as whole:
            body = await _ask(client, url, timeout_s)
    if whole.cancelled_caught:
        raise InstanceError(f"Health check failed: no whole answer within {timeout_s:g}s")
    return _listed_models(body)


async def _ask(client: httpx.AsyncClient, url: str, timeout_s: float) -> bytes:
    """The body of the server's `GET /v1/models`, read up to its cap; `InstanceError` saying
    why not."""
    try:
        async with client.stream("GET", url, headers={"accept": "application/json"}) as r:
            if r.status_code != 200:
                raise InstanceError(
                    f"Health check failed: GET /v1/models answered HTTP {r.status_code}"
                )
            return await _read_capped(r)
    except httpx.ConnectError as e:
        raise InstanceError(_why_not_connected(e)) from e
    except httpx.TimeoutException:
        raise InstanceError(f"Health check failed: no answer within {timeout_s:g}s") from None
    except httpx.HTTPError as e:
        raise InstanceError(f"Health check failed: {type(e).__name__}: {e}") from e


def _why_not_connected(e: BaseException) -> str:
    """The document's "Connection refused" if that is what happened (to every address the
    host has: trio tries them all and groups the errors), else what did."""
    causes: list[BaseException] = []
    seen: BaseException | None = e
    while seen is not None and len(causes) < 16:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    leaves = [
        leaf
        for cause in causes
        for leaf in (cause.exceptions if isinstance(cause, BaseExceptionGroup) else (cause,))
    ]
    if any(isinstance(leaf, ConnectionRefusedError) for leaf in leaves):
        return "Connection refused"
    return f"Cannot connect: {causes[-1]}"


async def _read_capped(response: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > _MODEL_LIST_BYTES:
            raise InstanceError(
                f"Health check failed: GET /v1/models answered over {_MODEL_LIST_BYTES} bytes"
            )
    return bytes(data)


def _listed_models(body: bytes) -> tuple[str, ...]:
    shape = 'OpenAI\'s list of models, {"data": [{"id": MODEL}, ...]}'
    try:
        listed = json.loads(body)["data"]
        ids = [m["id"] for m in listed]
    except (ValueError, RecursionError, KeyError, TypeError):
        raise InstanceError(f"Health check failed: GET /v1/models did not answer {shape}") from None
    models = tuple(dict.fromkeys(m for m in ids if _fits_an_ad(m)))
    if not models:
        raise InstanceError("Health check failed: GET /v1/models lists no model")
    return models


def _fits_an_ad(model: Any) -> bool:
    return (
        isinstance(model, str)
        and 0 < len(model) <= _MODEL_NAME
        and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in model)
    )


class InstanceBook:
    """This worker's registered Task Instances, one per model, kept in its data dir."""

    def __init__(self, data_dir: Path, worker: bytes) -> None:
        self.path = data_dir / INSTANCES_FILE
        self.worker = worker
        self._by_model: dict[str, Registered] = {}
        # What the http driver reads: model -> endpoint, changed in place as instances come
        # and go (a task that started keeps the endpoint it was given).
        self.routes: dict[str, str] = {}
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
        self._save()

    def _put(self, r: Registered) -> None:
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
