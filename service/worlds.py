"""Worlds: created in the CP tier before observations of them are accepted.

A world is known once any CP key exists under its root. Known worlds are
cached for good (worlds are not deleted), and a world this region's replica
already holds observations of is known too, so the AP tier keeps accepting
observations while etcd has lost quorum; only a world never seen before needs
the CP tier to answer.
"""

from __future__ import annotations

from typing import Any

from consistency import cp_keys
from consistency.ap_store import ReplicaStore
from consistency.cp_store import CPStore
from consistency.errors import UnknownWorld
from service.errors import InvalidInput
from service.versioned import Consistency, Precondition, Versioned, Written, read, write


def _meta_path(world: str) -> str:
    return cp_keys.world_root(world) + "/meta"


class Worlds:
    def __init__(self, cp: CPStore, ap: ReplicaStore) -> None:
        self.cp = cp
        self.ap = ap
        self._known: set[str] = set()

    @staticmethod
    def check(world: str) -> None:
        """Refuse a bad world name (InvalidKey)."""
        cp_keys.check_world(world)

    async def put(self, world: str, meta: Any, pre: Precondition) -> Written:
        """Create or update a world's metadata document (any JSON object)."""
        path = _meta_path(world)
        if not isinstance(meta, dict):
            raise InvalidInput("world metadata must be a JSON object")
        written = await write(self.cp, path, meta, pre)
        self._known.add(world)
        return written

    async def get(self, world: str, consistency: Consistency = "linearizable") -> Versioned:
        return await read(self.cp, _meta_path(world), consistency)

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
