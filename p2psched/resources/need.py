"""Needs (what a task requires of a worker), whether a profile meets one, and capability keys.

Owns: the need expression language (`gpu=A100,vram>=40,model=llama-3-8b`), `Need.matches`
and why a profile misses one (`Need.misses`, `nearest_misses`: which clause fails, by how much),
`capability_keys` (the DHT keys a worker's ad is stored under, which `is_ad_key` recognises, and
which shard of each a worker's ad lands in) and `Need.search_keys` (the keys a scheduler reads
to find the workers that may match); an ad's TTL and the longest lifetime a holder grants one.
Promises: a bad expression raises `NeedError` naming the clause and what is allowed. Every
profile that matches a need is stored under every key of that need's `search_keys()`, so
searching those keys and filtering with `matches` finds exactly the matching workers.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from p2psched.resources.profile import Profile, gpu_family

# One capability key would sit on the same k DHT nodes for every worker that has it; spread
# over shards, each worker writes to one of them and a search reads them all.
SHARDS = {"any": 16, "gpu": 8, "model": 8, "driver": 8}
# An ad key ends in this mark (its first 28 bytes, which place it in the DHT, are a hash), so a
# holder knows a value stored there must be a worker's ad, and checks it as one.
AD_KEY_MARK = b"\xadad2"
AD_TTL = 120.0  # seconds; as Petals does, short, and republished every half of it
MAX_AD_LIFETIME = 4 * AD_TTL  # the longest expiry a holder grants a record under an ad key

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
}
_Measure = Callable[[Profile], float]
_NUMERIC: dict[str, tuple[_Measure, str]] = {
    "vram": (lambda p: p.max_vram_gb, "GiB of memory on the worker's largest GPU"),
    "gpus": (lambda p: float(len(p.gpus)), "number of GPUs"),
    "ram": (lambda p: p.ram_gb, "GiB of RAM"),
    "cpus": (lambda p: float(p.cpu_cores), "CPU cores"),
    "disk": (lambda p: p.disk_gb, "GiB of free disk"),
    "slots": (lambda p: float(p.free_slots), "free task slots"),
    "max_price": (lambda p: p.min_price, "the worker's minimum price per task"),
}
_TEXT = ("gpu", "model", "loaded", "driver")
_CLAUSE = re.compile(r"^\s*([a-z_][a-z0-9_.]*)\s*(>=|<=|=|>|<)\s*(.+?)\s*$")


class NeedError(ValueError):
    """A need expression that cannot be understood; the message names the clause and the fix."""


@dataclass(frozen=True, slots=True)
class Clause:
    field: str
    op: str
    value: str | float

    def __str__(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else self.value
        return f"{self.field}{self.op}{value}"


@dataclass(frozen=True, slots=True)
class Need:
    clauses: tuple[Clause, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Need:
        """`gpu=A100,vram>=40,ram>=16,model=llama-3-8b,driver=http,max_price<=0.02,label.region=eu`;
        an empty text is the need any worker meets."""
        clauses = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            found = _CLAUSE.match(part)
            if found is None:
                raise NeedError(f"{part!r} is not FIELD OP VALUE (for example vram>=40)")
            name, op, raw = found.groups()
            if name in _NUMERIC:
                try:
                    value: str | float = float(raw)
                except ValueError:
                    raise NeedError(
                        f"{part!r}: {name} takes a number ({_NUMERIC[name][1]})"
                    ) from None
            elif name in _TEXT or name.startswith("label."):
                if op != "=":
                    raise NeedError(f"{part!r}: {name} can only be compared with '='")
                value = raw
            else:
                known = ", ".join([*_TEXT, *_NUMERIC, "label.NAME"])
                raise NeedError(f"{part!r}: unknown field {name!r}; known fields: {known}")
            clauses.append(Clause(name, op, value))
        return cls(tuple(clauses))

    def __str__(self) -> str:
        return ",".join(map(str, self.clauses)) or "(any worker)"

    def matches(self, profile: Profile) -> bool:
        return all(_holds(c, profile) for c in self.clauses)

    def misses(self, profile: Profile) -> list[str]:
        """Why `profile` does not meet this need: each clause it fails, and by how much
        ("asks 0.01 > max_price 0.001"); empty if it matches."""
        return [_miss(c, profile) for c in self.clauses if not _holds(c, profile)]

    def searched(self) -> str:
        """The capability `search_keys` looks up, as a clause: "driver=command"."""
        return self.search_keys()[0].replace(":", "=", 1)

    def search_keys(self) -> tuple[str, list[bytes]]:
        """The capability this need is looked up by, and its shard keys. The most selective
        capability it names wins: a model, then a GPU family, then a driver, else any worker."""
        for kind in ("model", "gpu", "driver"):
            for c in self.clauses:
                if c.field == kind or (kind == "model" and c.field == "loaded"):
                    name = _capability_name(kind, str(c.value))
                    return name, [_shard_key(name, s) for s in range(SHARDS[kind])]
        return "any", [_shard_key("any", s) for s in range(SHARDS["any"])]


def _holds(c: Clause, p: Profile) -> bool:
    if c.field in _NUMERIC:
        return _OPS[c.op](_NUMERIC[c.field][0](p), float(c.value))
    value = str(c.value)
    match c.field:
        case "gpu":
            return any(g.family == gpu_family(value) for g in p.gpus)
        case "model":
            return value in p.installed_models or value in p.loaded_models
        case "loaded":
            return value in p.loaded_models
        case "driver":
            return value in p.drivers
    return p.label(c.field.removeprefix("label.")) == value


def _miss(c: Clause, p: Profile) -> str:
    if c.field == "max_price":
        return f"asks {p.min_price:g} > max_price {float(c.value):g}"
    if c.field in _NUMERIC:
        has = _NUMERIC[c.field][0](p)
        gap = abs(has - float(c.value))
        side = "short" if c.op in (">=", ">") else "over" if c.op in ("<=", "<") else "off"
        return f"has {c.field}={has:g}, not {c}" + (f" ({gap:g} {side})" if gap else "")
    match c.field:
        case "gpu":
            has_gpus = ", ".join(g.family for g in p.gpus) or "no GPU"
            return f"has {has_gpus}, not gpu={c.value}"
        case "model" | "loaded":
            return f"has no {c}"
        case "driver":
            return f"does not enable {c}"
    has_label = p.label(c.field.removeprefix("label."))
    return f"has no {c.field}" if has_label is None else f"has {c.field}={has_label}, not {c}"


def nearest_misses(need: Need, profiles: list[Profile], *, most: int = 3) -> str:
    """Why none of `profiles` (the workers found under `need.searched()`) meets `need`,
    nearest first: "1 worker has driver=command but asks 0.01 > max_price 0.001", or "no
    worker advertises gpu=H100" when none was found at all."""
    searched = need.searched()
    if not profiles:
        return "no worker found" if searched == "any" else f"no worker advertises {searched}"
    groups: dict[tuple[str, ...], list[Profile]] = {}
    for p in sorted(profiles, key=lambda p: (len(need.misses(p)), p.min_price)):
        failing = tuple(c.field for c in need.clauses if not _holds(c, p))
        if failing:
            groups.setdefault(failing, []).append(p)
    said = []
    for members in list(groups.values())[:most]:
        n = len(members)
        has = "found" if searched == "any" else f"{'has' if n == 1 else 'have'} {searched}"
        nearest = "; ".join(need.misses(members[0]))
        but = "but" if n == 1 else "but the nearest"
        said.append(f"{n} worker{'s' if n > 1 else ''} {has} {but} {nearest}")
    if len(groups) > most:
        said.append(f"{sum(map(len, list(groups.values())[most:]))} more miss in other ways")
    return ", ".join(said)


def _capability_name(kind: str, value: str) -> str:
    return f"{kind}:{gpu_family(value) if kind == 'gpu' else value}"


@lru_cache(maxsize=4096)  # checking each ad read names its keys: the same few, again and again
def _shard_key(capability: str, shard: int) -> bytes:
    digest = hashlib.sha256(f"p2psched/capability/2/{capability}/{shard}".encode()).digest()
    return digest[: 32 - len(AD_KEY_MARK)] + AD_KEY_MARK


def is_ad_key(key: bytes) -> bool:
    """Whether `key` is a capability key, under which only worker ads may be stored."""
    return key.endswith(AD_KEY_MARK)


def _shard_of(capability: str, node_id: bytes) -> int:
    """A worker's shard of a capability: a hash of its id with the capability's name, so no
    worker picks its shard but by making new identities, each of which costs the id puzzle."""
    digest = hashlib.sha256(b"p2psched/shard/1/" + capability.encode() + b"/" + node_id).digest()
    return int.from_bytes(digest[:4], "big") % SHARDS[capability.split(":", 1)[0]]


def capability_keys(profile: Profile, node_id: bytes) -> dict[str, bytes]:
    """The DHT keys a worker's ad is stored under, by capability: any worker, each GPU family,
    each installed or loaded model, each driver. A worker always writes to the same shard of
    a capability (`_shard_of` its node id), so a new ad replaces its old one there."""
    names = ["any"]
    names += sorted({_capability_name("gpu", g.model) for g in profile.gpus})
    names += sorted(
        {_capability_name("model", m) for m in (*profile.installed_models, *profile.loaded_models)}
    )
    names += sorted({_capability_name("driver", d) for d in profile.drivers})
    return {name: _shard_key(name, _shard_of(name, node_id)) for name in names}
