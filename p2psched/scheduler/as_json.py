"""Values as JSON shows them: MessagePack's bytes as {"base64": ...}, infinities and NaN as
strings. What the control API shows of outputs, and what a job's compare command reads."""

from __future__ import annotations

import base64
import math
from typing import Any


def to_json(value: Any) -> Any:
    """MessagePack values as JSON: bytes become {"base64": ...}; infinities become strings."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, float):
        return json_number(value)
    return value


def json_number(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")
