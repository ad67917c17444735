"""The predictor's frozen estimates, `LookupTable`: what `lookup_table` mode answers from, and
what an operator ships as JSON (`to_json`, `from_json`).

Promises: a table never changes once made (read-only mappings over private copies); reading one
from JSON checks every field, row count and worker id, and names the field that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from p2psched.identity import NODE_ID_BYTES
from p2psched.scheduler.estimate import Estimate, Source
from p2psched.wire import schema
from p2psched.wire.schema import SchemaError

TABLE_VERSION = 1


@dataclass(frozen=True, slots=True)
class LookupTable:
    """Frozen estimates, keyed as the predictor falls back: by worker, model and size bucket; by
    worker and model (any size); by worker (any model); then `default`. Read-only mappings."""

    sizes: MappingProxyType[tuple[bytes, str | None, int], Estimate]
    models: MappingProxyType[tuple[bytes, str | None], Estimate]
    workers: MappingProxyType[bytes, Estimate]
    default: Estimate

    @classmethod
    def of(
        cls,
        sizes: dict[tuple[bytes, str | None, int], Estimate],
        models: dict[tuple[bytes, str | None], Estimate],
        workers: dict[bytes, Estimate],
        default: Estimate,
    ) -> LookupTable:
        """A table over private copies of these dicts, so nobody can change it afterwards."""
        return cls(
            MappingProxyType(dict(sizes)),
            MappingProxyType(dict(models)),
            MappingProxyType(dict(workers)),
            default,
        )

    def to_json(self) -> dict[str, Any]:
        """The table as JSON: worker ids in hex, a null bucket in `models` rows."""
        return {
            "version": TABLE_VERSION,
            "default": self.default.to_json(),
            "sizes": [
                {"worker": w.hex(), "model": m, "bucket": b, **e.to_json()}
                for (w, m, b), e in self.sizes.items()
            ],
            "models": [
                {"worker": w.hex(), "model": m, **e.to_json()} for (w, m), e in self.models.items()
            ],
            "workers": [{"worker": w.hex(), **e.to_json()} for w, e in self.workers.items()],
        }

    @classmethod
    def from_json(cls, doc: Any, path: str = "table") -> LookupTable:
        """A table from `to_json`'s output, or `SchemaError` naming the field (prefixed with
        `path`, e.g. the file's name) that is wrong."""
        top = _TABLE(doc, path)
        if top["version"] != TABLE_VERSION:
            raise SchemaError(
                f"{path}.version", f"version {top['version']} is not {TABLE_VERSION}; re-export it"
            )
        default = _entry(top["default"], "default")
        sizes = {(r["worker"], r["model"], r["bucket"]): _entry(r, "table") for r in top["sizes"]}
        models = {(r["worker"], r["model"]): _entry(r, "table") for r in top["models"]}
        workers = {r["worker"]: _entry(r, "table") for r in top["workers"]}
        return cls.of(sizes, models, workers, default)


def _worker_hex(v: Any, path: str) -> Any:
    try:
        raw = bytes.fromhex(v) if type(v) is str else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != NODE_ID_BYTES:
        raise SchemaError(path, f"expected a worker id: {NODE_ID_BYTES} bytes in hex")
    return raw


_SECONDS = schema.number(0.0, 1e11)
_ESTIMATE = {
    "wait_mean": _SECONDS,
    "wait_err": _SECONDS,
    "run_mean": _SECONDS,
    "run_err": _SECONDS,
    "samples": schema.uint(),
}
_MODEL = schema.optional(schema.text(128))
_MAX_ROWS = 10_000_000
_TABLE = schema.mapping(
    {
        "version": schema.uint(),
        "default": schema.mapping(_ESTIMATE),
        "sizes": schema.list_of(
            schema.mapping(
                {"worker": _worker_hex, "model": _MODEL, "bucket": schema.uint(64), **_ESTIMATE}
            ),
            _MAX_ROWS,
        ),
        "models": schema.list_of(
            schema.mapping({"worker": _worker_hex, "model": _MODEL, **_ESTIMATE}), _MAX_ROWS
        ),
        "workers": schema.list_of(schema.mapping({"worker": _worker_hex, **_ESTIMATE}), _MAX_ROWS),
    }
)


def _entry(row: dict[str, Any], source: Source) -> Estimate:
    return Estimate(
        row["wait_mean"], row["wait_err"], row["run_mean"], row["run_err"], row["samples"], source
    )
