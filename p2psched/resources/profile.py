"""A worker's public resource profile and its wire form.

Owns: `Profile` and `Gpu`, and the strict schema a profile from a peer is checked against.
Promises: `Profile.from_wire(profile.to_wire()) == profile`; `from_wire` accepts nothing but a
well-formed profile of this schema version, raising `SchemaError` naming the field; an encoded
profile is at most `MAX_PROFILE_BYTES`, so it fits in one DHT record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from p2psched.wire import schema
from p2psched.wire.codec import encode
from p2psched.wire.schema import SchemaError

SCHEMA_VERSION = 1
MAX_PROFILE_BYTES = 3072
_NAME = 128
_LIST = 64
_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro", "amd", "radeon", "intel"}
_SUFFIXES = {"TI", "ADA", "SUPER"}


@lru_cache(maxsize=4096)  # a swarm has a few hundred GPU models; every ad read names some
def gpu_family(model: str) -> str:
    """The family a GPU model name belongs to, as needs and capability keys name it:
    "NVIDIA A100-SXM4-40GB" and "A100" give "A100"; "NVIDIA GeForce RTX 4090" gives "RTX4090".
    """
    words = [
        w for w in re.split(r"[\s_/-]+", model.strip()) if w and w.lower() not in _VENDOR_WORDS
    ]
    for i, word in enumerate(words):
        if any(c.isdigit() for c in word):
            head = word
            if word.isdigit() and i > 0 and words[i - 1].isalpha():
                head = words[i - 1] + word  # "RTX 4090", "RTX-4090"
            if i + 1 < len(words) and words[i + 1].upper() in _SUFFIXES:
                head += words[i + 1]  # "RTX 3090 Ti", "RTX 6000 Ada": other cards
            return head.upper()
    return "".join(words).upper()


@dataclass(frozen=True, slots=True)
class Gpu:
    model: str
    vram_gb: float
    driver: str = ""

    @property
    def family(self) -> str:
        return gpu_family(self.model)


@dataclass(frozen=True, slots=True)
class Profile:
    cpu_model: str
    cpu_cores: int
    ram_gb: float
    disk_gb: float = 0.0
    gpus: tuple[Gpu, ...] = ()
    installed_models: tuple[str, ...] = ()
    loaded_models: tuple[str, ...] = ()
    download_mbps: float = 0.0
    upload_mbps: float = 0.0
    workload_cpu: float = 0.0  # fractions of capacity in use, 0..1
    workload_gpu: float = 0.0
    workload_ram: float = 0.0
    workload_vram: float = 0.0  # of the GPUs' memory, the part in use
    min_price: float = 0.0  # per task, in the network's unit of money
    drivers: tuple[str, ...] = ()
    free_slots: int = 0
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs: region, owner, ...
    # Where the worker can be reached: "HOST:PORT", or "GATE_HOST:PORT/relay/<its id>"
    # through a gate's circuit (`wire.hop`).
    addresses: tuple[str, ...] = ()
    version: int = field(default=SCHEMA_VERSION)

    @property
    def max_vram_gb(self) -> float:
        return max((g.vram_gb for g in self.gpus), default=0.0)

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)

    def to_wire(self) -> dict[str, Any]:
        """The public meta_info layout, with this project's additions after `min_cost`."""
        return {
            "_v": self.version,
            "installed_models": list(self.installed_models),
            "loaded_models": list(self.loaded_models),
            "specifications": {
                "GPU": [[g.model, g.vram_gb, g.driver] for g in self.gpus],
                "CPU": [self.cpu_model, self.cpu_cores],
                "RAM": self.ram_gb,
                "disk": self.disk_gb,
            },
            "network": {"download": self.download_mbps, "upload": self.upload_mbps},
            # "VRAM" only when there is some in use: an ad without it is read as before.
            "workload": {
                "CPU": self.workload_cpu,
                "GPU": self.workload_gpu,
                "RAM": self.workload_ram,
            }
            | ({"VRAM": self.workload_vram} if self.workload_vram else {}),
            "min_cost": self.min_price,
            "drivers": list(self.drivers),
            "free_slots": self.free_slots,
            "labels": dict(self.labels),
            "addresses": list(self.addresses),
        }

    def encode(self) -> bytes:
        data = encode(self.to_wire())
        if len(data) > MAX_PROFILE_BYTES:
            raise ValueError(
                f"the profile takes {len(data)} bytes encoded, over the {MAX_PROFILE_BYTES}-byte "
                "limit: advertise fewer models, labels or addresses"
            )
        return data

    @classmethod
    def from_wire(cls, obj: Any) -> Profile:
        v = _PROFILE(obj, "profile")
        spec = v["specifications"]
        return cls(
            version=v["_v"],
            installed_models=tuple(v["installed_models"]),
            loaded_models=tuple(v["loaded_models"]),
            gpus=tuple(Gpu(g[0], g[1], g[2]) for g in spec["GPU"]),
            cpu_model=spec["CPU"][0],
            cpu_cores=spec["CPU"][1],
            ram_gb=spec["RAM"],
            disk_gb=spec["disk"],
            download_mbps=v["network"]["download"],
            upload_mbps=v["network"]["upload"],
            workload_cpu=v["workload"]["CPU"],
            workload_gpu=v["workload"]["GPU"],
            workload_ram=v["workload"]["RAM"],
            workload_vram=v["workload"].get("VRAM", 0.0),
            min_price=v["min_cost"],
            drivers=tuple(v["drivers"]),
            free_slots=v["free_slots"],
            labels=tuple(sorted(v["labels"].items())),
            addresses=tuple(v["addresses"]),
        )


_fraction = schema.number(0.0, 1.0)
_WORKLOAD: dict[str, schema.Check] = {"CPU": _fraction, "GPU": _fraction, "RAM": _fraction}
_WITHOUT_VRAM = schema.mapping(_WORKLOAD)
_WITH_VRAM = schema.mapping({**_WORKLOAD, "VRAM": _fraction})


def _workload(v: Any, path: str) -> Any:
    """CPU, GPU and RAM, and VRAM when the worker has GPU memory in use."""
    if type(v) is dict and "VRAM" in v:
        return _WITH_VRAM(v, path)
    return _WITHOUT_VRAM(v, path)


def _version(v: Any, path: str) -> Any:
    if v != SCHEMA_VERSION or type(v) is not int:
        raise SchemaError(path, f"expected schema version {SCHEMA_VERSION}")
    return v


_label_key = schema.text(32)
_text = schema.text(_NAME)
# C0 and C1 control characters, and DEL: one search per name rather than a loop per character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _labels(v: Any, path: str) -> Any:
    if type(v) is not dict or len(v) > 16:
        raise SchemaError(path, "expected a map of at most 16 labels")
    for k, val in v.items():
        _label_key(k, f"{path}.{k}")
        _text(val, f"{path}.{k}")
    return v


def _name(v: Any, path: str) -> Any:
    """Text a peer sends that ends up on an operator's screen: no control characters."""
    _text(v, path)
    if _CONTROL.search(v) is not None:
        raise SchemaError(path, "control characters are not allowed")
    return v


_names = schema.list_of(_name, _LIST)
_PROFILE = schema.mapping(
    {
        "_v": _version,
        "installed_models": _names,
        "loaded_models": _names,
        "specifications": schema.mapping(
            {
                "GPU": schema.list_of(
                    schema.tuple_of(
                        ("model", "vram", "driver"),
                        (_name, schema.number(0, 4096), schema.text(64)),
                    ),
                    16,
                ),
                "CPU": schema.tuple_of(("model", "cores"), (_name, schema.uint(4096))),
                "RAM": schema.number(0, 1 << 20),
                "disk": schema.number(0, 1 << 30),
            }
        ),
        "network": schema.mapping({"download": schema.number(), "upload": schema.number()}),
        "workload": _workload,
        "min_cost": schema.number(),
        "drivers": schema.list_of(schema.text(32), 16),
        "free_slots": schema.uint(1024),
        "labels": _labels,
        "addresses": schema.list_of(schema.text(120), 8),  # a relay address is ~90
    }
)
