"""The [dht] table of a node's config file (the gate's `--config gate.toml` and the worker's
`--config worker.toml`): the DHT's limits an operator may set, and the `DhtConfig` they make.

Owns: `DhtSettings` (strict pydantic models: a `true` is no number, an unknown name is refused)
with each limit's range, and `describe`, which says a refusal in the file's words.
Promises: every default is today's (`DhtConfig`'s and `StoreLimits`'), so a file without [dht]
changes nothing; a value out of its range is refused, naming its table and field, before the
node starts.

    [dht]                         # every field is optional
    id_bits = 15                  # the work a node id must show (0..32), the same on every node
                                  # of a network: --id-bits wins over it, it wins over
                                  # $P2PSCHED_ID_BITS, and 15 is the default
    stranger_rate = 64.0          # first contacts served a second from one /24 or /48 (> 0)
    stranger_burst = 512.0        # ... of them at once (>= 1)
    stranger_total_rate = 1000.0  # ... from everywhere together (> 0)
    stranger_total_burst = 4096.0 # ... at once (>= 1)

    [dht.store]                   # the records this node holds for others
    max_per_key = 512             # under one key (1..100000)
    max_per_prefix_per_key = 64   # of those, from one /24 or /48 (1..max_per_key)
    max_per_publisher = 128       # of one publisher under all keys (a worker needs a handful)
    max_records = 200000          # in all (1..100000000)
    max_bytes = 67108864          # their encoded size (1 MiB..64 GiB)
    max_ttl = 86400.0             # the longest a record is kept, in seconds (3600..604800)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from p2psched.dht.protocol import DhtConfig
from p2psched.dht.records import StoreLimits
from p2psched.dht.routing import TrustedNetworks

_TABLE = ConfigDict(frozen=True, strict=True, extra="forbid")
_MAX_RATE = 1e6  # first contacts a second: far beyond what one core can agree keys for
_MAX_BURST = 1e7


def _today(cls: type[Any], name: str) -> Any:
    """The default a dataclass gives its field `name`: the file's default is the code's."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _rate(name: str) -> Any:
    return Field(default=_today(DhtConfig, name), gt=0, le=_MAX_RATE)


def _burst(name: str) -> Any:
    return Field(default=_today(DhtConfig, name), ge=1, le=_MAX_BURST)


def _count(name: str, most: int) -> Any:
    return Field(default=_today(StoreLimits, name), ge=1, le=most)


class StoreTable(BaseModel):
    """[dht.store]: `StoreLimits` as the file sets them."""

    model_config = _TABLE

    max_per_key: int = _count("max_per_key", 100_000)
    max_per_prefix_per_key: int = _count("max_per_prefix_per_key", 100_000)
    max_per_publisher: int = _count("max_per_publisher", 10_000_000)
    max_records: int = _count("max_records", 100_000_000)
    # At least a few of the largest records; at most what a big host would give a cache.
    max_bytes: int = Field(default=_today(StoreLimits, "max_bytes"), ge=1 << 20, le=64 << 30)
    # A record must outlive its publisher's hourly republishing (and a worker's ad, 8 minutes).
    max_ttl: float = Field(default=_today(StoreLimits, "max_ttl"), ge=3600.0, le=7 * 86400.0)

    @model_validator(mode="after")
    def _prefix_within_key(self) -> StoreTable:
        if self.max_per_prefix_per_key > self.max_per_key:
            raise PydanticCustomError(
                "dht_config",
                "max_per_prefix_per_key ({per_prefix}) must be at most max_per_key ({per_key})",
                {"per_prefix": self.max_per_prefix_per_key, "per_key": self.max_per_key},
            )
        return self

    def limits(self) -> StoreLimits:
        return StoreLimits(**self.model_dump())


class DhtSettings(BaseModel):
    """[dht]: the limits of `DhtConfig` an operator sets, and the network's id_bits (None: not
    said here, so --id-bits, else $P2PSCHED_ID_BITS, else the default, decides)."""

    model_config = _TABLE

    id_bits: int | None = Field(default=None, ge=0, le=32)
    stranger_rate: float = _rate("stranger_rate")
    stranger_burst: float = _burst("stranger_burst")
    stranger_total_rate: float = _rate("stranger_total_rate")
    stranger_total_burst: float = _burst("stranger_total_burst")
    store: StoreTable = StoreTable()

    def dht_config(self, *, client: bool, trusted: TrustedNetworks | None) -> DhtConfig:
        """The node's `DhtConfig`: these limits, the rest as the node layer says (`trusted`:
        None spares LANs). Its id_bits is the process's (`identity.network_id_bits`), which the
        CLI sets from this table."""
        return DhtConfig(
            client=client,
            trusted=trusted or TrustedNetworks(),
            store=self.store.limits(),
            stranger_rate=self.stranger_rate,
            stranger_burst=self.stranger_burst,
            stranger_total_rate=self.stranger_total_rate,
            stranger_total_burst=self.stranger_total_burst,
        )


def describe(err: ErrorDetails) -> str:
    """A refusal of the [dht] table as the file shows it, "[dht.store] max_bytes: reason";
    `err`'s location starts inside the table."""
    loc = [str(part) for part in err["loc"]]
    table, known = ["dht"], DhtSettings.model_fields
    if loc and loc[0] == "store" and (len(loc) > 1 or err["type"] != "model_type"):
        table, known, loc = ["dht", "store"], StoreTable.model_fields, loc[1:]
    where = f"[{'.'.join(table)}]" + (f" {loc[0]}" if loc else "")
    if err["type"] == "extra_forbidden":
        reason = f"unknown field; known: {', '.join(known)}"
    elif err["type"] == "model_type":
        reason = "must be a table"
    else:
        reason = err["msg"].replace("Input should be", "must be", 1)
        if "input" in err and not isinstance(err["input"], dict):
            reason += f", not {err['input']!r}"
    return f"{where}: {reason}"
