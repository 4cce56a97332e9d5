"""PN-counter: per-source grow-only totals of increments (P) and decrements (N)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from ._wire import (
    SAFE_INT,
    InvalidValueError,
    WireFormatError,
    WireObject,
    check_int,
    check_text,
    expect_int,
    expect_list,
    expect_sorted_unique,
    expect_text,
)

__all__ = ["CounterOverflowError", "PNCounter"]


class CounterOverflowError(InvalidValueError):
    """A per-source total would pass 2**53-1, the largest integer Lua holds exactly."""


class PNCounter(WireObject):
    """State-based PN-counter.

    Each source only ever raises its own P and N totals, so merge can take the
    per-source maximum and a re-delivered state changes nothing: no event-id
    dedup is needed for counters. The flip side: the delta for an increment is
    the source's new *total*, so two writers sharing one source id and each
    computing "old total + 1" from the same read would lose one increment.
    Each source slot must have a single writer that serialises its own
    increments (e.g. the region's Redis, doing the addition inside Lua).

    Wire form: array of ``[source, p, n]`` sorted by source (UTF-8 bytes),
    with ``p, n`` in ``[0, 2**53-1]`` and no entry where both are 0 (an absent
    source and an all-zero one are the same state, so only one may have bytes).
    Merge: union of sources, per-source ``max(p)`` and ``max(n)``.
    """

    __slots__ = ("_slots",)

    def __init__(
        self,
        p: Mapping[str, int] | None = None,
        n: Mapping[str, int] | None = None,
    ) -> None:
        slots: dict[str, tuple[int, int]] = {}
        for source, total in (p or {}).items():
            slots[check_text("counter source", source)] = (check_int("P total", total, 0), 0)
        for source, total in (n or {}).items():
            check_text("counter source", source)
            slots[source] = (slots.get(source, (0, 0))[0], check_int("N total", total, 0))
        self._slots = {s: pn for s, pn in slots.items() if pn != (0, 0)}

    @classmethod
    def _of(cls, slots: dict[str, tuple[int, int]]) -> PNCounter:
        # Skips validation: only for slots derived from already valid counters.
        counter = cls.__new__(cls)
        counter._slots = slots
        return counter

    @property
    def p(self) -> Mapping[str, int]:
        return MappingProxyType({s: pn[0] for s, pn in self._slots.items() if pn[0]})

    @property
    def n(self) -> Mapping[str, int]:
        return MappingProxyType({s: pn[1] for s, pn in self._slots.items() if pn[1]})

    @property
    def value(self) -> int:
        return sum(p for p, _ in self._slots.values()) - sum(n for _, n in self._slots.values())

    def __len__(self) -> int:
        """Number of sources that have contributed."""
        return len(self._slots)

    def is_empty(self) -> bool:
        """True for the merge identity (no source has contributed)."""
        return not self._slots

    def slot(self, source: str) -> PNCounter:
        """Only ``source``'s totals: the delta to ship after it changed."""
        pn = self._slots.get(source)
        return PNCounter._of({source: pn} if pn else {})

    def _changed(self, source: str, amount: int, index: int) -> PNCounter:
        check_text("counter source", source)
        check_int("amount", amount, 1)
        totals = list(self._slots.get(source, (0, 0)))
        totals[index] += amount
        if totals[index] > SAFE_INT:
            raise CounterOverflowError(f"counter source {source!r} would pass {SAFE_INT}")
        return PNCounter._of({source: (totals[0], totals[1])})

    def increment_delta(self, source: str, amount: int = 1) -> PNCounter:
        """Delta (one slot) that raises ``source``'s P total by ``amount`` (>= 1)."""
        return self._changed(source, amount, 0)

    def decrement_delta(self, source: str, amount: int = 1) -> PNCounter:
        """Delta (one slot) that raises ``source``'s N total by ``amount`` (>= 1)."""
        return self._changed(source, amount, 1)

    def increment(self, source: str, amount: int = 1) -> PNCounter:
        return self.merge(self.increment_delta(source, amount))

    def decrement(self, source: str, amount: int = 1) -> PNCounter:
        return self.merge(self.decrement_delta(source, amount))

    def merge(self, other: PNCounter) -> PNCounter:
        if not isinstance(other, PNCounter):
            raise TypeError(f"cannot merge PNCounter with {type(other).__name__}")
        merged = dict(self._slots)
        for source, (p, n) in other._slots.items():
            mine = merged.get(source)
            merged[source] = (p, n) if mine is None else (max(mine[0], p), max(mine[1], n))
        return PNCounter._of(merged)

    def to_wire(self) -> list[Any]:
        return [[s, *self._slots[s]] for s in sorted(self._slots)]

    @classmethod
    def from_wire(cls, wire: object) -> PNCounter:
        slots: dict[str, tuple[int, int]] = {}
        order: list[str] = []
        for entry in expect_list(wire, "PNCounter"):
            source, p, n = expect_list(entry, "PNCounter entry", 3)
            source = expect_text(source, "counter source")
            p = expect_int(p, "P total", 0)
            n = expect_int(n, "N total", 0)
            if p == 0 and n == 0:
                raise WireFormatError(f"PNCounter entry for {source!r} is all zero")
            slots[source] = (p, n)
            order.append(source)
        expect_sorted_unique(order, "PNCounter sources")
        return cls._of(slots)
