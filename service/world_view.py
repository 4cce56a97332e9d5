"""What the world model is asked about: entity states from the AP tier, physics from the CP tier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consistency import cp_keys
from consistency.ap_store import EntityState, ReplicaStore
from consistency.cp_store import Consistency, CPStore
from consistency.errors import NotFound
from service.errors import EntityIncomplete, EntityMissing
from world_model.state import MAX_ENTITIES, MissingState, state_row


@dataclass
class WorldView:
    ids: list[str]
    rows: list[list[float]]  # one world_model.state row per entity
    physics: dict[str, float]
    physics_revision: int
    physics_consistency: str
    replica: str
    watermark: dict[str, str]

    def provenance(self) -> dict[str, Any]:
        return {"physics_revision": self.physics_revision, "physics_consistency": self.physics_consistency,
                "ap": {"replica": self.replica, "watermark": self.watermark}}


def row(e: EntityState) -> list[float]:
    try:
        return state_row({name: f.value for name, f in e.fields.items()})
    except MissingState as m:
        raise EntityIncomplete(e.entity, m.missing) from None


async def _states(ap: ReplicaStore, world: str, entities: Sequence[str]) -> list[EntityState]:
    states = []
    for ent in entities:
        s = await ap.get_entity(world, ent)
        if s is None:
            raise EntityMissing(ent)
        states.append(s)
    return states


async def load(cp: CPStore, ap: ReplicaStore, world: str, entities: Sequence[str] | None,
               consistency: Consistency = "linearizable", also: Sequence[str] = ()) -> WorldView:
    """`entities` (default: the first MAX_ENTITIES by id) and always those in `also`, which
    the query is about (EntityMissing if never observed); `also` displaces the default's last."""
    cp_keys.check_world(world)
    physics = await cp.get(cp_keys.param_path(world, cp_keys.PHYSICS_KEY), consistency)
    if entities is None:
        states, _ = await ap.list_entities(world, None, MAX_ENTITIES)
        listed = {s.entity for s in states}
        absent = [e for e in dict.fromkeys(also) if e not in listed]
        if absent:
            states = states[: max(0, MAX_ENTITIES - len(absent))] + await _states(ap, world, absent)
    else:
        states = await _states(ap, world, list(dict.fromkeys([*entities, *also])))
    if not states:
        raise NotFound(f"no entities observed in world {world!r}")
    return WorldView([s.entity for s in states], [row(s) for s in states], physics.value, physics.mod_revision,
                     physics.consistency, ap.region, await ap.watermark())
