"""Last-writer-wins register ordered by (HLC stamp, node id)."""

from __future__ import annotations

from typing import Any

from consistency.hlc import HLCTimestamp, InvalidTimestampError

from ._wire import (
    Scalar,
    WireFormatError,
    WireObject,
    check_text,
    decode_value,
    encode_value,
    expect_list,
    expect_text,
)

__all__ = ["LWWRegister"]


class LWWRegister(WireObject):
    """One write: a value, the HLC stamp it was made at, and the writing node.

    Wire form (5-element array)::

        [wall_ms, logical, node_id, kind, payload]

    ``kind``/``payload``: 0 None -> payload 0; 1 bool -> true/false;
    2 int (|v| <= 2**53-1) -> int; 3 float (finite) -> Python ``repr`` string,
    e.g. "1.5", "1e+16", "-0.0"; 4 str -> the string.

    Merge rule: the write with the greater ``(stamp, node_id)`` wins, stamps
    compared as ``(wall_ms, logical)`` numerically, node ids compared as UTF-8
    bytes. On equal ``(stamp, node_id)`` the receiver keeps its own register:
    an HLC issues each stamp once per node, so equal keys mean the same write
    (a duplicate delivery). If that invariant were broken (two processes
    sharing a node id), replicas could keep different values forever; the
    merge is commutative only under that invariant.
    """

    __slots__ = ("_value", "_stamp", "_node_id", "_value_wire")

    def __init__(self, value: Scalar, stamp: HLCTimestamp, node_id: str) -> None:
        if not isinstance(stamp, HLCTimestamp):
            raise TypeError(f"stamp must be an HLCTimestamp, got {type(stamp).__name__}")
        self._value_wire = encode_value(value)  # validates the value up front
        # Read back from the wire form so subclasses (IntEnum, numpy floats)
        # become the plain type every other replica will decode.
        self._value = decode_value(*self._value_wire)
        self._stamp = stamp
        self._node_id = check_text("node_id", node_id)

    @property
    def value(self) -> Scalar:
        return self._value

    @property
    def stamp(self) -> HLCTimestamp:
        return self._stamp

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def order_key(self) -> tuple[HLCTimestamp, str]:
        """What merges compare; the greater key wins."""
        return (self._stamp, self._node_id)

    def merge(self, other: LWWRegister) -> LWWRegister:
        """The winning write of the two (``self`` on a tie, see class doc)."""
        if not isinstance(other, LWWRegister):
            raise TypeError(f"cannot merge LWWRegister with {type(other).__name__}")
        return other if other.order_key > self.order_key else self

    def to_wire(self) -> list[Any]:
        return [self._stamp.wall_ms, self._stamp.logical, self._node_id, *self._value_wire]

    @classmethod
    def from_wire(cls, wire: object) -> LWWRegister:
        wall_ms, logical, node_id, kind, payload = expect_list(wire, "LWWRegister", 5)
        try:
            stamp = HLCTimestamp.from_wire([wall_ms, logical])
        except InvalidTimestampError as exc:
            raise WireFormatError(f"LWWRegister stamp: {exc}") from exc
        return cls(decode_value(kind, payload), stamp, expect_text(node_id, "LWWRegister node_id"))
