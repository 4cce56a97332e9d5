"""Shared wire-format rules for the CRDT types.

The same merges are re-implemented in a Redis Lua script, which decodes a
state with ``cmsgpack.unpack``, merges, and re-encodes with ``cmsgpack.pack``.
For the bytes to match what Python writes, the wire form is restricted to what
survives that round trip unchanged (checked against lua_cmsgpack 0.4, the copy
vendored in Redis, running on Lua 5.1 where every number is a double):

* arrays only, never maps: Lua table iteration order is unspecified, so a map
  would come back in a random key order;
* no nil inside arrays: a Lua table cannot hold a trailing nil, the array would
  shrink;
* integers only within +-(2**53 - 1): larger ones are not exact in a double;
* no floats: cmsgpack re-encodes an integral double as an int and a double
  that fits a float32 as float32, while Python always writes float64. Floats
  are therefore carried as their Python ``repr`` string;
* text only as msgpack str (Python ``use_bin_type=True``), never bin: cmsgpack
  decodes bin into a Lua string and re-encodes it as str.

Everything keyed is a list of entries sorted by key in UTF-8 byte order
(for valid text, Python's code point order is the same order). Lua must sort
and compare with a byte-wise comparator, not ``<``: Redis calls
``setlocale(LC_COLLATE, "")`` so Lua string ``<`` follows the locale.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, TypeVar, Union

import msgpack

__all__ = [
    "SAFE_INT",
    "CRDTError",
    "InvalidValueError",
    "Scalar",
    "WireFormatError",
    "WireObject",
]

SAFE_INT = (1 << 53) - 1

Scalar = Union[None, bool, int, float, str]

# Register value kinds; the numbers are part of the wire format.
KIND_NONE = 0
KIND_BOOL = 1
KIND_INT = 2
KIND_FLOAT = 3
KIND_STR = 4


class CRDTError(Exception):
    """Base class of every error raised by the CRDT package."""


class InvalidValueError(CRDTError, ValueError):
    """A value, key or amount cannot be represented in the wire format."""


class WireFormatError(CRDTError, ValueError):
    """Input to from_wire()/from_bytes() is malformed or not canonical.

    Non-canonical input (unsorted keys, duplicates, redundant entries) is
    refused rather than repaired: it means the other implementation (Lua)
    disagrees with this one, and repairing would hide that.
    """


def check_text(what: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidValueError(f"{what} must be a str, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidValueError(f"{what} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot go on the wire
        raise InvalidValueError(f"{what} is not valid UTF-8 text: {value!r}") from exc
    return value


def check_int(what: str, value: object, lower: int, upper: int = SAFE_INT) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidValueError(f"{what} must be an int, got {type(value).__name__}")
    if not lower <= value <= upper:
        raise InvalidValueError(f"{what}={value} outside [{lower}, {upper}]")
    return int(value)


def encode_value(value: Scalar) -> list[Any]:
    """Register value -> ``[kind, payload]``; see the module docstring for why."""
    if value is None:
        return [KIND_NONE, 0]
    if isinstance(value, bool):
        return [KIND_BOOL, bool(value)]
    if isinstance(value, int):
        return [KIND_INT, check_int("register int value", value, -SAFE_INT)]
    if isinstance(value, float):
        if not math.isfinite(value):
            # NaN != NaN would make equal states compare unequal.
            raise InvalidValueError(f"register float value must be finite, got {value!r}")
        return [KIND_FLOAT, repr(float(value))]
    if isinstance(value, str):
        return [KIND_STR, check_text("register str value", value, allow_empty=True)]
    raise InvalidValueError(
        f"register values are None, bool, int, float or str; got {type(value).__name__}"
    )


def decode_value(kind: object, payload: object) -> Scalar:
    """Inverse of encode_value(); refuses anything encode_value would not write."""
    bad = WireFormatError(f"bad register value [{kind!r}, {payload!r}]")
    if type(kind) is not int:
        raise bad
    if kind == KIND_NONE and type(payload) is int and payload == 0:
        return None
    if kind == KIND_BOOL and isinstance(payload, bool):
        return payload
    if kind == KIND_INT and type(payload) is int and -SAFE_INT <= payload <= SAFE_INT:
        return payload
    if kind == KIND_FLOAT and isinstance(payload, str):
        try:
            number = float(payload)
        except ValueError:
            raise bad from None
        # Only the exact repr() string is canonical: "1.50" or "1e0" would
        # decode fine but re-encode to different bytes.
        if math.isfinite(number) and repr(number) == payload:
            return number
    if kind == KIND_STR and isinstance(payload, str):
        return expect_text(payload, "register str value", allow_empty=True)
    raise bad


def expect_list(wire: object, what: str, length: int | None = None) -> Sequence[Any]:
    if not isinstance(wire, (list, tuple)):
        raise WireFormatError(f"{what} must be an array, got {type(wire).__name__}")
    if length is not None and len(wire) != length:
        raise WireFormatError(f"{what} must have {length} elements, got {len(wire)}")
    return wire


def expect_text(wire: object, what: str, *, allow_empty: bool = False) -> str:
    try:
        return check_text(what, wire, allow_empty=allow_empty)
    except InvalidValueError as exc:
        raise WireFormatError(str(exc)) from exc


def expect_int(wire: object, what: str, lower: int, upper: int = SAFE_INT) -> int:
    try:
        return check_int(what, wire, lower, upper)
    except InvalidValueError as exc:
        raise WireFormatError(str(exc)) from exc


def expect_sorted_unique(keys: Sequence[str], what: str) -> None:
    for before, after in zip(keys, keys[1:]):
        if not before < after:
            raise WireFormatError(f"{what} not strictly ascending: {before!r} then {after!r}")


def pack(wire: object) -> bytes:
    return msgpack.packb(wire, use_bin_type=True)


def unpack(data: bytes) -> object:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise WireFormatError(f"not a msgpack document: {exc}") from exc


W = TypeVar("W", bound="WireObject")


class WireObject:
    """Equality, hashing and bytes for a type that defines to_wire/from_wire.

    Equality is defined on the wire form on purpose: Python would call
    ``1 == 1.0 == True`` equal, but they are different register values with
    different bytes, and two replicas are "the same" only if their bytes are.
    """

    __slots__ = ()

    def to_wire(self) -> list[Any]:
        raise NotImplementedError

    @classmethod
    def from_wire(cls: type[W], wire: object) -> W:
        raise NotImplementedError

    def canonical_bytes(self) -> bytes:
        """msgpack of to_wire(): equal states have equal bytes, and vice versa."""
        return pack(self.to_wire())

    @classmethod
    def from_bytes(cls: type[W], data: bytes) -> W:
        """Inverse of canonical_bytes(); refuses non-canonical input."""
        obj = cls.from_wire(unpack(data))
        if obj.canonical_bytes() != data:
            # e.g. an int sent as uint64 where one byte would do, or float32.
            raise WireFormatError(f"{cls.__name__} bytes are not in canonical encoding")
        return obj

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.canonical_bytes() == other.canonical_bytes()

    def __hash__(self) -> int:
        return hash(self.canonical_bytes())

    def __repr__(self) -> str:
        return f"{type(self).__name__}.from_wire({self.to_wire()!r})"
