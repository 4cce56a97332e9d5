"""An observed entity: named registers, counters and tag sets, merged per key."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, TypeVar

from consistency.hlc import HLCTimestamp

from ._wire import (
    Scalar,
    WireFormatError,
    WireObject,
    check_text,
    expect_list,
    expect_sorted_unique,
    expect_text,
)
from .awset import AWSet
from .counter import PNCounter
from .register import LWWRegister

__all__ = ["Entity"]

C = TypeVar("C", LWWRegister, PNCounter, AWSet)


def _merge_maps(mine: Mapping[str, C], theirs: Mapping[str, C]) -> dict[str, C]:
    merged = dict(mine)
    for key, value in theirs.items():
        merged[key] = merged[key].merge(value) if key in merged else value  # type: ignore[arg-type]
    return merged


def _checked(kind: type[C], what: str, items: Mapping[str, C] | None, keep: Callable[[C], bool]) -> dict[str, C]:
    out: dict[str, C] = {}
    for name, crdt in (items or {}).items():
        check_text(f"{what} field name", name)
        if not isinstance(crdt, kind):
            raise TypeError(f"{what} {name!r} must be a {kind.__name__}, got {type(crdt).__name__}")
        if keep(crdt):
            out[name] = crdt
    return out


class Entity(WireObject):
    """A map of CRDTs in three separate namespaces: registers, counters, sets.

    Merge is per key within each namespace; a key missing on one side is taken
    from the other. The namespaces are separate (a field may be a register and
    a counter at once) so that merge never has to resolve a type conflict.
    Empty counters and sets are dropped: they are the same state as absence.

    Wire form: a 3-element array ``[registers, counters, sets]``; each is an
    array of ``[field, crdt_wire]`` sorted by field (UTF-8 bytes), where
    crdt_wire is LWWRegister / PNCounter / AWSet ``to_wire()``. Counter and
    set wires are never empty.
    """

    __slots__ = ("_registers", "_counters", "_sets")

    def __init__(
        self,
        registers: Mapping[str, LWWRegister] | None = None,
        counters: Mapping[str, PNCounter] | None = None,
        sets: Mapping[str, AWSet] | None = None,
    ) -> None:
        self._registers = _checked(LWWRegister, "register", registers, lambda r: True)
        self._counters = _checked(PNCounter, "counter", counters, lambda c: not c.is_empty())
        self._sets = _checked(AWSet, "set", sets, lambda s: not s.is_empty())

    @property
    def registers(self) -> Mapping[str, LWWRegister]:
        return MappingProxyType(self._registers)

    @property
    def counters(self) -> Mapping[str, PNCounter]:
        return MappingProxyType(self._counters)

    @property
    def sets(self) -> Mapping[str, AWSet]:
        return MappingProxyType(self._sets)

    def get(self, field: str, default: Scalar = None) -> Scalar:
        """Current value of register ``field``."""
        register = self._registers.get(field)
        return default if register is None else register.value

    def counter(self, field: str) -> PNCounter:
        return self._counters.get(field, PNCounter())

    def tag_set(self, field: str) -> AWSet:
        return self._sets.get(field, AWSet())

    def max_stamp(self) -> HLCTimestamp | None:
        """Greatest register stamp: what a receiving clock should update() with."""
        return max((r.stamp for r in self._registers.values()), default=None)

    def to_plain(self) -> dict[str, dict[str, Any]]:
        """JSON-friendly view of the current values (not a CRDT state)."""
        return {
            "registers": {k: r.value for k, r in sorted(self._registers.items())},
            "counters": {k: c.value for k, c in sorted(self._counters.items())},
            "sets": {k: sorted(s.elements) for k, s in sorted(self._sets.items())},
        }

    # Deltas are small Entities; applying one is merge(). The *_delta methods
    # exist so a caller can ship exactly what changed to the store.

    @staticmethod
    def write_delta(field: str, value: Scalar, stamp: HLCTimestamp, node_id: str) -> Entity:
        return Entity(registers={field: LWWRegister(value, stamp, node_id)})

    def increment_delta(self, field: str, source: str, amount: int = 1) -> Entity:
        return Entity(counters={field: self.counter(field).increment_delta(source, amount)})

    def decrement_delta(self, field: str, source: str, amount: int = 1) -> Entity:
        return Entity(counters={field: self.counter(field).decrement_delta(source, amount)})

    def add_delta(self, field: str, element: str, tag: str) -> Entity:
        return Entity(sets={field: self.tag_set(field).add_delta(element, tag)})

    def remove_delta(self, field: str, element: str) -> Entity:
        return Entity(sets={field: self.tag_set(field).remove_delta(element)})

    def write(self, field: str, value: Scalar, stamp: HLCTimestamp, node_id: str) -> Entity:
        return self.merge(Entity.write_delta(field, value, stamp, node_id))

    def increment(self, field: str, source: str, amount: int = 1) -> Entity:
        return self.merge(self.increment_delta(field, source, amount))

    def decrement(self, field: str, source: str, amount: int = 1) -> Entity:
        return self.merge(self.decrement_delta(field, source, amount))

    def add(self, field: str, element: str, tag: str) -> Entity:
        return self.merge(self.add_delta(field, element, tag))

    def remove(self, field: str, element: str) -> Entity:
        return self.merge(self.remove_delta(field, element))

    def merge(self, other: Entity) -> Entity:
        if not isinstance(other, Entity):
            raise TypeError(f"cannot merge Entity with {type(other).__name__}")
        merged = Entity.__new__(Entity)
        merged._registers = _merge_maps(self._registers, other._registers)
        merged._counters = _merge_maps(self._counters, other._counters)
        merged._sets = _merge_maps(self._sets, other._sets)
        return merged

    def to_wire(self) -> list[Any]:
        return [
            [[k, v.to_wire()] for k, v in sorted(part.items())]
            for part in (self._registers, self._counters, self._sets)
        ]

    @classmethod
    def from_wire(cls, wire: object) -> Entity:
        parts = expect_list(wire, "Entity", 3)
        decoded: list[dict[str, Any]] = []
        for part, kind in zip(parts, (LWWRegister, PNCounter, AWSet)):
            fields: dict[str, Any] = {}
            order: list[str] = []
            for item in expect_list(part, f"Entity {kind.__name__} fields"):
                name, crdt_wire = expect_list(item, "Entity field", 2)
                name = expect_text(name, "field name")
                crdt = kind.from_wire(crdt_wire)
                if kind is not LWWRegister and crdt.is_empty():
                    raise WireFormatError(f"Entity {kind.__name__} {name!r} is empty")
                fields[name] = crdt
                order.append(name)
            expect_sorted_unique(order, f"Entity {kind.__name__} field names")
            decoded.append(fields)
        return cls(*decoded)
