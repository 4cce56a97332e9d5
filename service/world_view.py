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
from world_model.errors import TooManyEntities
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
    skipped: dict[str, list[str]]  # entities left out of a whole-world view: the state fields each lacks

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


SCAN_LIMIT = 4096  # entities a whole-world view reads at most while looking for bodies


async def _bodies(ap: ReplicaStore, world: str) -> tuple[list[EntityState], dict[str, list[str]]]:
    """Every entity of the world with a complete state, and the others with what they lack.

    Bodies interact only on contact, but any body may come into contact with any other within
    a horizon, so a prediction without a list takes them all rather than an arbitrary few."""
    bodies: list[EntityState] = []
    skipped: dict[str, list[str]] = {}
    after, scanned, more = None, 0, True
    while more:
        page, more = await ap.list_entities(world, after, 256)
        for e in page:
            try:
                state_row({name: f.value for name, f in e.fields.items()})
                bodies.append(e)
            except MissingState as m:
                skipped[e.entity] = m.missing
        scanned += len(page)
        if len(bodies) > MAX_ENTITIES or (more and scanned >= SCAN_LIMIT):
            raise TooManyEntities(f"world {world!r} has more than {MAX_ENTITIES} bodies with a complete state "
                                  f"(or more than {SCAN_LIMIT} entities); name the ones that take part in `entities`")
        after = page[-1].entity if page else None
    return bodies, skipped


async def load(cp: CPStore, ap: ReplicaStore, world: str, entities: Sequence[str] | None,
               consistency: Consistency = "linearizable", also: Sequence[str] = ()) -> WorldView:
    """`entities`, or by default every body of the world with a complete state (at most
    MAX_ENTITIES), and always those in `also`, which the query is about (EntityMissing if never
    observed, EntityIncomplete if it lacks state)."""
    cp_keys.check_world(world)
    physics = await cp.get(cp_keys.param_path(world, cp_keys.PHYSICS_KEY), consistency)
    skipped: dict[str, list[str]] = {}
    if entities is None:
        states, skipped = await _bodies(ap, world)
        listed = {s.entity for s in states}
        absent = [e for e in dict.fromkeys(also) if e not in listed]
        if absent:
            states += await _states(ap, world, absent)
    else:
        states = await _states(ap, world, list(dict.fromkeys([*entities, *also])))
    if len(states) > MAX_ENTITIES:
        raise TooManyEntities(f"{len(states)} entities, at most {MAX_ENTITIES}")
    if not states:
        raise NotFound(f"no entities observed in world {world!r}")
    return WorldView([s.entity for s in states], [row(s) for s in states], physics.value, physics.mod_revision,
                     physics.consistency, ap.region, await ap.watermark(), skipped)
