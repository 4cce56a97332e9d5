"""The edge's state seen through the two calls each tier's store answers for a model query
(service/world_view.py): a CP get, and AP entity reads. So the edge runs the core's own
ModelQueries, and predict, surprise and plan read the same way and fail with the same errors."""

from __future__ import annotations

import bisect

from consistency import cp_keys
from consistency.ap_entity import EntityState
from consistency.cp_store import Entry
from consistency.errors import NotFound
from edge.freshness import Freshness
from edge.store import EdgeStore

EDGE = "edge"  # the consistency an answer read from an edge's copy is labelled with


class EdgeCP:
    def __init__(self, store: EdgeStore, fresh: Freshness, world: str) -> None:
        self.store = store
        self.fresh = fresh
        self.base = cp_keys.params_prefix(world)

    async def get(self, key: str, consistency: str = EDGE) -> Entry:
        if not key.startswith(self.base) or key[len(self.base):] not in self.store.params:
            raise NotFound(key)
        value, revision = self.store.params[key[len(self.base):]]
        return Entry(key, value, revision, 0, 0, self.fresh.cp_applied, EDGE)  # type: ignore[arg-type]


class EdgeAP:
    def __init__(self, store: EdgeStore, fresh: Freshness, world: str, prefix: str) -> None:
        self.store = store
        self.fresh = fresh
        self.world = world
        self.prefix = prefix

    @property
    def region(self) -> str:
        return self.fresh.region or ""

    async def get_entity(self, world: str, entity: str) -> EntityState | None:
        e = self.store.entities.get(entity) if world == self.world else None
        return e.state(world, entity) if e is not None and e.visible else None

    async def list_entities(self, world: str, after: str | None, limit: int) -> tuple[list[EntityState], bool]:
        names = sorted(n for n, e in self.store.entities.items() if e.visible) if world == self.world else []
        start = bisect.bisect_right(names, after) if after is not None else 0
        page = names[start:start + limit]
        return [self.store.entities[n].state(world, n) for n in page], start + limit < len(names)

    async def watermark(self) -> dict[str, str]:
        return {self.region: self.fresh.changes_applied or "v2"}
