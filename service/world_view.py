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
from world_model.config import SimConfig
from world_model.errors import TooManyEntities
from world_model.state import MAX_ENTITIES, STATE_FIELDS, MissingState, state_row

# The box the models here are trained in. A whole-world view leaves out a body outside it (or too
# fast, or without a positive size): one such entity (x: 1e308) made every whole-world query 422.
BOX = SimConfig.box


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
    # or holds a value the model cannot use

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


def unusable(row: list[float]) -> list[str]:
    """The fields of a complete state row the model refuses: a position that puts the disc
    outside the box, a speed beyond the model's, a radius or mass not positive."""
    # world_model.inference imports torch; a node answering a model query has it loaded already.
    from world_model.inference import BOX_SLACK, MAX_SPEED

    state = dict(zip(STATE_FIELDS, row))
    r = state["radius"]
    bad = [n for n in ("radius", "mass") if state[n] <= 0]
    bad += [n for n in ("x", "y") if not r - BOX_SLACK <= state[n] <= BOX - r + BOX_SLACK]
    bad += [n for n in ("vx", "vy") if abs(state[n]) > MAX_SPEED]
    return [n for n in STATE_FIELDS if n in bad]


SCAN_LIMIT = 4096  # entities a whole-world view reads at most while looking for bodies


async def _bodies(ap: ReplicaStore, world: str) -> tuple[list[EntityState], dict[str, list[str]]]:
    """Every entity of the world with a complete, usable state, and the others with the fields
    each lacks or holds unusable values in.

    Bodies interact only on contact, but any body may come into contact with any other within
    a horizon, so a prediction without a list takes them all rather than an arbitrary few."""
    bodies: list[EntityState] = []
    skipped: dict[str, list[str]] = {}
    after, scanned, more = None, 0, True
    while more:
        page, more = await ap.list_entities(world, after, 256)
        for e in page:
            try:
                bad = unusable(state_row({name: f.value for name, f in e.fields.items()}))
            except MissingState as m:
                bad = m.missing
            if bad:
                skipped[e.entity] = bad
            else:
                bodies.append(e)
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
