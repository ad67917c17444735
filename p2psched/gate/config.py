"""A gate's config file (TOML, `p2psched gate --config`): the limits of its relay, and of its
DHT node (the [dht] table, `p2psched/dht/config_file.py`, where its fields are listed).

Owns: checking the file's tables against `GateConfig`, in the operator's words (a node's config,
`node/config.py`, reads the file, and hands a gate's tables here).
Promises: a bad file raises `GateConfigError` naming the table or limit and the reason, before
the gate starts; an unknown table or limit is refused, never ignored (a misspelled one would
leave the default in force without a word).

    [relay]                     # every limit is optional; the defaults are RelayLimits'
    reservations = 1024         # whole numbers > 0: reservations*, circuits*, circuit_bytes
    circuits_per_peer = 16
    circuit_seconds = 3600.0    # numbers > 0: reservation_ttl, circuit_seconds, bandwidth,
    bandwidth = 125e6           # answer_seconds

    [dht]                       # as every node's: id_bits, stranger_rate, ...
    id_bits = 15
    [dht.store]                 # the records it holds for others: max_per_publisher, ...
    max_per_publisher = 128
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from p2psched.dht.config_file import DhtSettings, describe
from p2psched.gate.relay import RelayLimits


class GateConfigError(ValueError):
    """A gate config the gate cannot start with; the message says where and why."""


class GateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    relay: RelayLimits = RelayLimits()
    dht: DhtSettings = DhtSettings()


def check_gate_config(doc: Mapping[str, Any]) -> GateConfig:
    """A gate config already read; `GateConfigError` says which table or limit and why."""
    try:
        return GateConfig.model_validate(doc)
    except ValidationError as e:
        errors = e.errors()
        # A misspelled name before any value: a value's check may be moot once it is right.
        shown = next((err for err in errors if err["type"] == "extra_forbidden"), errors[0])
        raise GateConfigError(_said(shown)) from None


def _said(err: ErrorDetails) -> str:
    loc, kind = err["loc"], err["type"]
    if len(loc) == 1 and kind == "extra_forbidden":
        return f"[{loc[0]}]: unknown table; known: [relay], [dht]"
    if loc[0] == "dht":
        return describe({**err, "loc": loc[1:]})
    if len(loc) == 1:
        return "[relay] must be a table"
    name = str(loc[1])
    if kind == "extra_forbidden":
        known = ", ".join(sorted(RelayLimits.model_fields))
        return f"unknown relay limit {name!r}; known: {known}"
    counted = RelayLimits.model_fields[name].annotation is int
    what = "a positive whole number" if counted else "a positive number"
    return f"relay limit {name}: {err['input']!r} is not {what}"
