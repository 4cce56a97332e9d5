"""Planted bugs, one per guarantee, that jepsen_like's checkers must catch.

Sabotage exists only to prove the checkers can fail. Each name maps to the
store classes it swaps in; `plan` folds the names a node was started with
(WORLDSTATE_SABOTAGE) into one `StorePlan`, and the node builds whatever the
plan names. With no sabotage the plan is the production one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from consistency.ap_store import Observation, ReplicaStore, StreamEntry
from consistency.cp_store import Consistency, CPStore, Entry, WriteResult
from consistency.hlc import HLCTimestamp


class StaleCacheCPStore(CPStore):
    """cp-stale-cache: the first answer for a key is served forever after."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[str, Entry] = {}

    async def get(self, key: str, consistency: Consistency = "linearizable") -> Entry:
        if key not in self._cache:
            self._cache[key] = await super().get(key, consistency)
        return self._cache[key]

    async def put(self, key: str, value: Any, **kwargs: Any) -> WriteResult:
        result = await super().put(key, value, **kwargs)
        old = self._cache.get(key)
        if old is not None:
            self._cache[key] = replace(old, value=value, mod_revision=result.revision, revision=result.revision)
        return result


class WallClock:
    """wall-clock-lww: stands in for the HLC, stamping with the (skewable) wall clock alone."""

    def __init__(self, now_ms: Any) -> None:
        self._now_ms = now_ms
        self.last = HLCTimestamp(0, 0)

    def now(self) -> HLCTimestamp:
        self.last = HLCTimestamp(max(0, int(self._now_ms())), 0)
        return self.last

    def reserve(self, n: int) -> HLCTimestamp:
        self.last = HLCTimestamp(max(0, int(self._now_ms())), n - 1)
        return HLCTimestamp(self.last.wall_ms, 0)

    def update(self, remote: HLCTimestamp, **_: Any) -> HLCTimestamp:
        return self.now()  # never moves past what it has seen: causality is lost


class NoDedupReplicaStore(ReplicaStore):
    """no-dedup: every posted observation gets a fresh event id before the dedup check."""

    _serial = itertools.count()

    async def ingest(self, observations: list[Observation]):  # type: ignore[no-untyped-def]
        fresh = [o._replace(event_id=f"{o.event_id}.{next(self._serial)}") for o in observations]
        return await super().ingest(fresh)


class DroppingReplicaStore(ReplicaStore):
    """drop-deltas: a peer that loses every fifth delta shipped to it (but acknowledges it)."""

    _serial = itertools.count()

    async def apply_remote(self, origin: str, entries: dict[int, list[StreamEntry]]) -> None:
        kept = {p: [e for e in listed if next(self._serial) % 5 != 4] for p, listed in entries.items()}
        if any(kept.values()):
            await super().apply_remote(origin, {p: listed for p, listed in kept.items() if listed})


class FreshClockReplicaStore(ReplicaStore):
    """fresh-hlc: the HLC is never moved past the partitions' T:clock, so a restart can stamp backwards."""

    async def seed_clock(self) -> None:
        pass


@dataclass(frozen=True)
class StorePlan:
    """The classes a node builds its stores from; the default is production."""

    cp: type[CPStore] = CPStore
    home: type[ReplicaStore] = ReplicaStore  # this region's replica
    peer: type[ReplicaStore] = ReplicaStore  # every other region's, as replication writes to them
    wall_clock: bool = False  # stamp writes with the wall clock instead of the HLC


@dataclass(frozen=True)
class Sabotage:
    description: str
    plant: Callable[[StorePlan], StorePlan]


REGISTRY: dict[str, Sabotage] = {
    "cp-stale-cache": Sabotage("CP reads served from a node-local cache that is never invalidated",
                               lambda p: replace(p, cp=StaleCacheCPStore)),
    "no-dedup": Sabotage("observations counted without dedup: a replayed event counts again",
                         lambda p: replace(p, home=NoDedupReplicaStore)),
    "wall-clock-lww": Sabotage("LWW ordered by the node's wall clock instead of its HLC",
                               lambda p: replace(p, wall_clock=True)),
    "drop-deltas": Sabotage("replication silently drops every fifth delta",
                            lambda p: replace(p, peer=DroppingReplicaStore)),
    "fresh-hlc": Sabotage("a restarted node's HLC starts from its wall clock, not past the stamps its replica holds",
                          lambda p: replace(p, home=FreshClockReplicaStore)),
}
SABOTAGES = {name: s.description for name, s in REGISTRY.items()}


def parse(value: str) -> frozenset[str]:
    """`a,b` -> the names, refusing any not in the registry."""
    names = frozenset(v.strip() for v in value.split(",") if v.strip())
    unknown = names - REGISTRY.keys()
    if unknown:
        raise ValueError(f"unknown sabotage {sorted(unknown)}; known: {sorted(REGISTRY)}")
    return names


def plan(names: frozenset[str]) -> StorePlan:
    store_plan = StorePlan()
    for name in sorted(names):
        store_plan = REGISTRY[name].plant(store_plan)
    return store_plan
