"""Worlds: created in the CP tier before observations of them are accepted.

A world is known once any CP key exists under its root. Known worlds are
cached for good (worlds are not deleted), and a world this region's replica
already holds observations of is known too, so the AP tier keeps accepting
observations while etcd has lost quorum; only a world never seen before needs
the CP tier to answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consistency import cp_keys
from consistency.ap_store import ReplicaStore
from consistency.cp_codec import prefix_end
from consistency.cp_store import CPStore
from consistency.errors import UnknownWorld
from service.errors import InvalidInput
from service.versioned import Consistency, Precondition, Versioned, Written, read, write


def prefix_end_str(prefix: str) -> str:
    return prefix_end(prefix.encode()).decode()


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

    async def list(self, after: str = "", limit: int = 100, visible: Callable[[str], bool] = lambda w: True,
                   revision: int = 0) -> tuple[list[str], int, bool]:
        """World names after `after` that `visible` keeps, in order, at one store revision: (names,
        revision, more). A skip-scan: one keys-only read per world, jumping past its keys."""
        root = f"{cp_keys.ROOT}/worlds/"
        start = root if not after else prefix_end_str(cp_keys.world_root(after) + "/")
        names: list[str] = []
        while len(names) <= limit:
            key, revision = await self.cp.next_key(start, prefix_end_str(root), revision)
            if key is None:
                return names, revision, False
            world = key[len(root):].split("/", 1)[0]
            if visible(world):
                names.append(world)
            start = prefix_end_str(cp_keys.world_root(world) + "/")
        return names[:limit], revision, True

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
