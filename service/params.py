"""A world's CP params: JSON values under `/`-separated keys, read linearizably,
written by compare-and-swap, listed at one revision and watched from one.

The physics document is a param (`physics/constants`) that is validated
against `world_model.config.Physics` wherever it is written, through its own
route or through the generic one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from consistency import cp_keys
from consistency.cp_store import CPStore
from service.errors import InvalidInput
from service.versioned import (Consistency, Precondition, Versioned, Written, check_revision, read, write, writer,
                               writer_record)
from world_model.config import Physics

__all__ = ["PHYSICS_KEY", "Change", "Listed", "Page", "Params", "Physics", "check_physics"]

PHYSICS_KEY = cp_keys.PHYSICS_KEY


@dataclass(frozen=True)
class Listed:
    key: str  # relative to the world's params
    value: Any
    revision: int
    create_revision: int
    version: int


@dataclass(frozen=True)
class Page:
    items: list[Listed]
    revision: int  # the snapshot every item reflects; pass it back to page through the same one
    more: bool


@dataclass(frozen=True)
class Change:
    type: Literal["put", "delete", "progress"]
    key: str  # relative to the world's params
    value: Any
    revision: int


def check_physics(doc: Any) -> dict[str, float]:
    """The physics document, or InvalidInput listing every field that breaks `Physics`."""
    if not isinstance(doc, dict):
        raise InvalidInput("physics document failed validation",
                           [{"loc": [], "msg": "Input should be an object", "type": "dict_type"}])
    errors: list[dict[str, Any]] = []
    out: dict[str, float] = {}
    for f in dataclasses.fields(Physics):
        v = doc.get(f.name)
        lo, hi = f.metadata["range"]
        if f.name not in doc:
            errors.append({"loc": [f.name], "msg": "Field required", "type": "missing"})
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            errors.append({"loc": [f.name], "msg": "Input should be a finite number", "type": "float_type"})
        elif not ((lo < v if f.metadata["lo_open"] else lo <= v) and v <= hi):
            bound = "(" if f.metadata["lo_open"] else "["
            errors.append({"loc": [f.name], "msg": f"Input should be in {bound}{lo}, {hi}]", "type": "range"})
        else:
            out[f.name] = float(v)
    errors += [{"loc": [k], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
               for k in sorted(doc.keys() - out.keys() - {e["loc"][0] for e in errors})]
    if errors:
        raise InvalidInput("physics document failed validation", errors)
    return out


class Params:
    def __init__(self, cp: CPStore) -> None:
        self.cp = cp

    @staticmethod
    def check(world: str, key: str) -> None:
        """Refuse a bad world or key (InvalidKey) before anything else is read."""
        cp_keys.param_path(world, key)

    async def get(self, world: str, key: str, consistency: Consistency = "linearizable") -> Versioned:
        return await read(self.cp, cp_keys.param_path(world, key), consistency)

    async def writer(self, world: str, key: str, revision: int) -> dict[str, Any] | None:
        """The key that made the write at `revision` (its id and name), if it was recorded."""
        return await writer(self.cp, cp_keys.param_path(world, key), revision)

    async def put(self, world: str, key: str, value: Any, pre: Precondition) -> Written:
        if key == PHYSICS_KEY:
            value = check_physics(value)
        return await write(self.cp, cp_keys.param_path(world, key), value, pre)

    async def delete(self, world: str, key: str, if_revision: int | None = None) -> int:
        """Delete one key (at `if_revision` if given); returns the store revision after."""
        if if_revision is not None:
            check_revision(if_revision, "If-Match")
        path = cp_keys.param_path(world, key)
        result = await self.cp.delete(path, if_revision=if_revision, also=writer_record(path, "delete"))
        return result.revision

    async def list(self, world: str, prefix: str = "", *, limit: int = 100, start_after: str | None = None,
                   revision: int = 0, consistency: Consistency = "linearizable") -> Page:
        check_revision(revision, "revision")
        base = cp_keys.params_prefix(world)
        after = cp_keys.param_path(world, start_after) if start_after else None
        listing = await self.cp.list(cp_keys.params_prefix(world, prefix), consistency=consistency, limit=limit,
                                     start_after=after, revision=revision)
        items = [Listed(e.key[len(base):], e.value, e.mod_revision, e.create_revision, e.version)
                 for e in listing.entries]
        return Page(items, listing.revision, listing.more)

    async def watch(self, world: str, prefix: str = "", start_revision: int = 0,
                    progress_s: float | None = None) -> tuple[int, AsyncIterator[Change]]:
        """Every change under the prefix from `start_revision` (0: the next one), and
        the revision it starts from. The iterator raises Compacted when history is gone.
        With `progress_s`, Changes of type "progress" (key "") say up to which revision every
        change under the prefix has been delivered."""
        check_revision(start_revision, "start_revision")  # here: once the stream has begun, it can only be cut
        watched = cp_keys.params_prefix(world, prefix)
        base = cp_keys.params_prefix(world)
        if start_revision == 0:
            start_revision = await self.cp.current_revision() + 1

        async def changes() -> AsyncIterator[Change]:
            async for ev in self.cp.watch(watched, start_revision, progress_s=progress_s):
                yield Change(ev.type, ev.key[len(base):] if ev.key else "", ev.value, ev.mod_revision)

        return start_revision, changes()
