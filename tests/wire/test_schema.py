"""The strict schemas decoded messages are checked against: the field at fault is named."""

from __future__ import annotations

import pytest

from p2psched.wire import schema


def test_schema_names_the_field_at_fault() -> None:
    check = schema.tuple_of(
        ("id", "items"), (schema.bin_exact(4), schema.list_of(schema.uint(10), 3))
    )
    assert check([b"abcd", [1, 2]], "msg") == [b"abcd", [1, 2]]
    with pytest.raises(schema.SchemaError) as e:
        check([b"abcd", [1, 11]], "msg")
    assert e.value.path == "msg.items[1]"
    with pytest.raises(schema.SchemaError, match="msg.id"):
        check(["abcd", []], "msg")
    with pytest.raises(schema.SchemaError, match="at most 3"):
        check([b"abcd", [1, 2, 3, 4]], "msg")
    with pytest.raises(schema.SchemaError):
        check([b"abcd"], "msg")
    with pytest.raises(schema.SchemaError):
        schema.uint()(True, "flag")  # bool is not an int here
