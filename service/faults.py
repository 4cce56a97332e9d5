"""Fault injection for jepsen_like, off unless WORLDSTATE_FAULTS=1.

Two kinds: a clock offset the nemesis can set on a running node (to skew its
HLC), and sabotage: planted bugs, one per guarantee, that the harness's
checkers must catch. Sabotage exists only to prove the checkers can fail.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from consistency.ap_store import Observation, ReplicaStore, StreamEntry
from consistency.cp_store import Consistency, CPStore, Entry, WriteResult
from consistency.hlc import HLCTimestamp

SABOTAGES = {
    "cp-stale-cache": "CP reads served from a node-local cache that is never invalidated",
    "no-dedup": "observations counted without dedup: a replayed event counts again",
    "wall-clock-lww": "LWW ordered by the node's wall clock instead of its HLC",
    "drop-deltas": "replication silently drops every fifth delta",
    "fresh-hlc": "a restarted node's HLC starts from its wall clock, not past the stamps its replica holds",
}


def parse_sabotage(value: str) -> frozenset[str]:
    names = frozenset(v.strip() for v in value.split(",") if v.strip())
    unknown = names - SABOTAGES.keys()
    if unknown:
        raise ValueError(f"unknown sabotage {sorted(unknown)}; known: {sorted(SABOTAGES)}")
    return names


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

    async def apply_remote(self, origin: str, entries: list[StreamEntry]) -> None:
        kept = [e for e in entries if next(self._serial) % 5 != 4]
        if kept:
            await super().apply_remote(origin, kept)


class FreshClockReplicaStore(ReplicaStore):
    """fresh-hlc: the HLC is never moved past ws:clock, so a restart can stamp backwards."""

    async def _seed_clock(self) -> None:
        self._clock_seeded = True
