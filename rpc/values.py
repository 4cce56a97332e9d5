"""google.protobuf.Value and Struct to and from the JSON values the service takes.

Written out rather than through json_format: the hot reads (GetParam) convert a value
on every call, and json_format's generic walk is several times slower. Numbers are
doubles on the wire (protobuf's Value has no integer); a non-finite one is refused,
as HTTP refuses NaN, which is not JSON.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

from service.errors import InvalidInput

__all__ = ["fill_struct", "from_struct", "from_value", "set_value", "to_struct", "to_value"]

_NULL = struct_pb2.NULL_VALUE


def from_value(v: struct_pb2.Value, loc: str = "value") -> Any:
    """A Value as the JSON value it carries (an unset Value is null)."""
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        n = v.number_value
        if not math.isfinite(n):
            raise InvalidInput(f"{loc}: a number must be finite",
                               [{"loc": [loc], "msg": "a number must be finite", "type": "finite_number"}])
        return n
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return from_struct(v.struct_value, loc)
    if kind == "list_value":
        return [from_value(item, loc) for item in v.list_value.values]
    return None


def from_struct(s: struct_pb2.Struct, loc: str = "value") -> dict[str, Any]:
    return {k: from_value(item, loc) for k, item in s.fields.items()}


def set_value(out: struct_pb2.Value, value: Any) -> None:
    """Fill `out` (a Value field of a message) with a JSON value."""
    if value is None:
        out.null_value = _NULL
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, (int, float)):
        out.number_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, dict):
        fill_struct(out.struct_value, value)
    elif isinstance(value, (list, tuple)):
        values = out.list_value.values
        for item in value:
            set_value(values.add(), item)
        if not value:
            out.list_value.SetInParent()
    elif hasattr(value, "tolist"):  # a numpy scalar or array, as a model answer holds
        set_value(out, value.tolist())
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def fill_struct(out: struct_pb2.Struct, doc: dict[str, Any]) -> None:
    fields = out.fields
    for k, item in doc.items():
        set_value(fields[str(k)], item)
    if not doc:
        out.SetInParent()


def to_value(value: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    set_value(out, value)
    return out


def to_struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    fill_struct(out, doc)
    return out
