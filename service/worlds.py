"""Which worlds exist: a world is known once any CP key exists under its root.

Known worlds are cached for good (worlds are not deleted), and a world this
region's replica already holds observations of is known too, so the AP tier
keeps accepting observations while etcd has lost quorum; only a world never
seen before needs the CP tier to answer.
"""

from __future__ import annotations

from consistency import cp_keys
from consistency.ap_store import ReplicaStore
from consistency.cp_store import CPStore
from consistency.errors import UnknownWorld


class WorldRegistry:
    def __init__(self, cp: CPStore, ap: ReplicaStore) -> None:
        self.cp = cp
        self.ap = ap
        self._known: set[str] = set()

    def add(self, world: str) -> None:
        self._known.add(world)

    async def require(self, world: str) -> None:
        """Raise UnknownWorld for a world with nothing in the CP tier (Unavailable if it cannot tell)."""
        if world in self._known:
            return
        if await self.ap.has_world(world):
            self._known.add(world)
            return
        listing = await self.cp.list(cp_keys.world_root(world) + "/", limit=1)
        if not listing.entries:
            raise UnknownWorld(world)
        self._known.add(world)
