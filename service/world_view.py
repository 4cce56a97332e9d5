"""What the world model is asked about: entity states from the AP tier, physics from the CP tier."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from consistency import cp_keys
from consistency.ap_store import EntityState, ReplicaStore
from consistency.cp_store import Consistency, CPStore
from consistency.errors import NotFound

# Fields an entity needs to be simulated; radius and mass default to mid-range
# values of the trained world when a source never reported them.
REQUIRED = ("x", "y", "vx", "vy")
DEFAULTS = {"radius": 0.5, "mass": 1.0}
MAX_ENTITIES = 64


class EntityMissing(LookupError):
    def __init__(self, entity: str) -> None:
        super().__init__(f"no observations of entity {entity!r} on this replica")
        self.entity = entity


class EntityIncomplete(ValueError):
    def __init__(self, entity: str, missing: list[str]) -> None:
        super().__init__(f"entity {entity!r} lacks numeric {', '.join(missing)}")
        self.entity = entity
        self.missing = missing


@dataclass
class WorldView:
    ids: list[str]
    rows: list[list[float]]  # x, y, vx, vy, radius, mass per entity
    physics: dict[str, float]
    physics_revision: int
    physics_consistency: str
    replica: str
    watermark: dict[str, str]

    def provenance(self) -> dict[str, Any]:
        return {"physics_revision": self.physics_revision, "physics_consistency": self.physics_consistency,
                "ap": {"replica": self.replica, "watermark": self.watermark}}


def row(e: EntityState) -> list[float]:
    values: dict[str, float] = {}
    missing = []
    for name in (*REQUIRED, *DEFAULTS):
        f = e.fields.get(name)
        v = f.value if f else DEFAULTS.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            missing.append(name)
        else:
            values[name] = float(v)
    if missing:
        raise EntityIncomplete(e.entity, missing)
    return [values[n] for n in (*REQUIRED, *DEFAULTS)]


async def load(cp: CPStore, ap: ReplicaStore, world: str, entities: list[str] | None,
               consistency: Consistency = "linearizable") -> WorldView:
    physics = await cp.get(cp_keys.param_path(world, cp_keys.PHYSICS_KEY), consistency)
    if entities is None:
        states, _ = await ap.list_entities(world, None, MAX_ENTITIES)
    else:
        states = []
        for ent in entities:
            s = await ap.get_entity(world, ent)
            if s is None:
                raise EntityMissing(ent)
            states.append(s)
    if not states:
        raise NotFound(f"no entities observed in world {world!r}")
    return WorldView([s.entity for s in states], [row(s) for s in states], physics.value, physics.mod_revision,
                     physics.consistency, ap.region, await ap.watermark())
