"""Strict, fast schemas for decoded messages.

A schema is a callable that checks a decoded value and returns it, or raises `SchemaError` naming
the field path and what was expected. No coercion: an int where bytes are expected is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Check = Callable[[Any, str], Any]


class SchemaError(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def bin_exact(n: int) -> Check:
    def check(v: Any, path: str) -> Any:
        if type(v) is not bytes or len(v) != n:
            raise SchemaError(path, f"expected {n} bytes")
        return v

    return check


def bin_max(n: int) -> Check:
    def check(v: Any, path: str) -> Any:
        if type(v) is not bytes or len(v) > n:
            raise SchemaError(path, f"expected at most {n} bytes")
        return v

    return check


def uint(maximum: int = (1 << 64) - 1) -> Check:
    def check(v: Any, path: str) -> Any:
        if type(v) is not int or not 0 <= v <= maximum:
            raise SchemaError(path, f"expected an integer in 0..{maximum}")
        return v

    return check


def text(max_len: int) -> Check:
    def check(v: Any, path: str) -> Any:
        if type(v) is not str or len(v) > max_len:
            raise SchemaError(path, f"expected text of at most {max_len} characters")
        return v

    return check


def boolean(v: Any, path: str) -> Any:
    if type(v) is not bool:
        raise SchemaError(path, "expected true or false")
    return v


def optional(inner: Check) -> Check:
    def check(v: Any, path: str) -> Any:
        return None if v is None else inner(v, path)

    return check


def list_of(inner: Check, max_len: int) -> Check:
    def check(v: Any, path: str) -> Any:
        if type(v) is not list or len(v) > max_len:
            raise SchemaError(path, f"expected a list of at most {max_len} items")
        return [inner(item, f"{path}[{i}]") for i, item in enumerate(v)]

    return check


def tuple_of(names: Sequence[str], checks: Sequence[Check]) -> Check:
    """A fixed-length array whose items are named (for error messages) and checked in order."""
    n = len(checks)

    def check(v: Any, path: str) -> Any:
        if type(v) is not list or len(v) != n:
            raise SchemaError(path, f"expected an array of {n} items ({', '.join(names)})")
        return [c(item, f"{path}.{name}") for name, c, item in zip(names, checks, v)]

    return check


def number(minimum: float = 0.0, maximum: float = 1e12) -> Check:
    """A finite number in range, given back as a float."""

    def check(v: Any, path: str) -> Any:
        if type(v) not in (int, float) or not minimum <= v <= maximum or v != v:
            raise SchemaError(path, f"expected a number in {minimum:g}..{maximum:g}")
        return float(v)

    return check


def mapping(fields: dict[str, Check]) -> Check:
    """A map with exactly these keys (no unknown ones: a strict schema)."""

    def check(v: Any, path: str) -> Any:
        if type(v) is not dict or set(v) != set(fields):
            raise SchemaError(path, f"expected a map with exactly {', '.join(sorted(fields))}")
        return {k: c(v[k], f"{path}.{k}") for k, c in fields.items()}

    return check
