"""Add-wins (observed-remove) set of strings, with tombstoned tags."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

from ._wire import (
    WireFormatError,
    WireObject,
    check_int,
    check_text,
    expect_list,
    expect_sorted_unique,
    expect_text,
)

__all__ = ["AWSet", "make_tag"]

_Entry = tuple[frozenset[str], frozenset[str]]  # (live add tags, removed tags)


def make_tag(node_id: str, counter: int) -> str:
    """A unique add tag from a node id and a per-node counter: ``"node:counter"``.

    Any string that is unique per add of an element works as a tag (an event id
    is the natural choice); this is for callers without one.
    """
    check_text("node_id", node_id)
    return f"{node_id}:{check_int('tag counter', counter, 0)}"


class AWSet(WireObject):
    """Observed-remove set where a concurrent add beats a remove.

    Each add carries a fresh tag; a remove tombstones only the tags of the
    element that the remover had seen. An add concurrent with the remove has a
    tag the remover never saw, so the element survives. Tags are scoped per
    element (identity is ``(element, tag)``), so the merge is total even if a
    tag were reused for two elements.

    Tombstones are kept forever: dropping one safely needs to know every
    replica has seen it (causal stability), which this layer does not track.

    Wire form: array of ``[element, [live tags...], [removed tags...]]`` sorted
    by element, both tag arrays sorted, all in UTF-8 byte order. Live and
    removed tags are disjoint; an entry never has both arrays empty.
    Merge, per element: ``removed = r1 | r2``, ``live = (l1 | l2) - removed``.
    An element is in the set iff its live array is non-empty.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, tuple[Iterable[str], Iterable[str]]] | None = None) -> None:
        """``entries``: element -> (add tags, removed tags); removed tags win."""
        normal: dict[str, _Entry] = {}
        for element, (added, removed) in (entries or {}).items():
            check_text("set element", element, allow_empty=True)
            dead = frozenset(check_text("tag", t) for t in removed)
            live = frozenset(check_text("tag", t) for t in added) - dead
            if live or dead:
                normal[element] = (live, dead)
        self._entries = normal

    @classmethod
    def _of(cls, entries: dict[str, _Entry]) -> AWSet:
        # Skips validation: only for entries derived from already valid sets.
        result = cls.__new__(cls)
        result._entries = entries
        return result

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(e for e, (live, _) in self._entries.items() if live)

    def __contains__(self, element: object) -> bool:
        entry = self._entries.get(element)  # type: ignore[call-overload]
        return bool(entry and entry[0])

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.elements))

    def __len__(self) -> int:
        return len(self.elements)

    def is_empty(self) -> bool:
        """True for the merge identity (no adds and no tombstones at all)."""
        return not self._entries

    def tags(self, element: str) -> frozenset[str]:
        """Live add tags of ``element`` (what a remove here would tombstone)."""
        entry = self._entries.get(element)
        return entry[0] if entry else frozenset()

    def add_delta(self, element: str, tag: str) -> AWSet:
        """Delta for adding ``element`` under the fresh, unique ``tag``."""
        check_text("set element", element, allow_empty=True)
        return AWSet._of({element: (frozenset([check_text("tag", tag)]), frozenset())})

    def remove_delta(self, element: str) -> AWSet:
        """Delta tombstoning the tags of ``element`` observed here; empty if absent."""
        live = self.tags(element)
        return AWSet._of({element: (frozenset(), live)} if live else {})

    def add(self, element: str, tag: str) -> AWSet:
        return self.merge(self.add_delta(element, tag))

    def remove(self, element: str) -> AWSet:
        return self.merge(self.remove_delta(element))

    def merge(self, other: AWSet) -> AWSet:
        if not isinstance(other, AWSet):
            raise TypeError(f"cannot merge AWSet with {type(other).__name__}")
        merged = dict(self._entries)
        for element, (live, dead) in other._entries.items():
            mine = merged.get(element)
            if mine is None:
                merged[element] = (live, dead)
            else:
                all_dead = mine[1] | dead
                merged[element] = ((mine[0] | live) - all_dead, all_dead)
        return AWSet._of(merged)

    def to_wire(self) -> list[Any]:
        return [
            [e, sorted(self._entries[e][0]), sorted(self._entries[e][1])]
            for e in sorted(self._entries)
        ]

    @classmethod
    def from_wire(cls, wire: object) -> AWSet:
        entries: dict[str, _Entry] = {}
        order: list[str] = []
        for item in expect_list(wire, "AWSet"):
            element, live, dead = expect_list(item, "AWSet entry", 3)
            element = expect_text(element, "set element", allow_empty=True)
            live_tags = [expect_text(t, "tag") for t in expect_list(live, "live tags")]
            dead_tags = [expect_text(t, "tag") for t in expect_list(dead, "removed tags")]
            expect_sorted_unique(live_tags, f"live tags of {element!r}")
            expect_sorted_unique(dead_tags, f"removed tags of {element!r}")
            if not live_tags and not dead_tags:
                raise WireFormatError(f"AWSet entry {element!r} has no tags")
            if set(live_tags) & set(dead_tags):
                raise WireFormatError(f"AWSet entry {element!r} has tags both live and removed")
            entries[element] = (frozenset(live_tags), frozenset(dead_tags))
            order.append(element)
        expect_sorted_unique(order, "AWSet elements")
        return cls._of(entries)
