"""Request and response documents of the HTTP API.

Request bodies the routes validate with pydantic are models here; the
physics and observation documents are validated by the service and only
described here (for OpenAPI), derived from the definitions the service uses.
Responses are rendered from the service's results by the functions below.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from api.problems import etag
from service.observation_input import MAX_FIELDS, PATTERNS
from service.observations import EntityState, Reflects
from service.params import Physics
from service.queries import MAX_BUDGET, MAX_ENTITIES, MIN_BUDGET, Answer
from service.versioned import Versioned


def _full(pattern: str) -> str:
    return f"^{pattern}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _physics_field(f: dataclasses.Field[Any]) -> Any:
    lo, hi = f.metadata["range"]
    low = {"gt": lo} if f.metadata["lo_open"] else {"ge": lo}
    return (float, Field(..., le=hi, description=f.metadata["description"], **low))


PhysicsIn = create_model("Physics", __base__=Strict, __doc__=Physics.__doc__,  # type: ignore[call-overload]
                         **{f.name: _physics_field(f) for f in dataclasses.fields(Physics)})


class ObservationIn(BaseModel):
    """The documented shape of one observation (service.observation_input enforces it)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(pattern=_full(PATTERNS["event_id"]), description="unique per event; a replay is a duplicate")
    entity: str = Field(pattern=_full(PATTERNS["entity"]))
    source: str = Field(pattern=_full(PATTERNS["source"]), description="sensor or agent that observed it")
    observed_at: float | None = Field(None, ge=0, description="unix time in seconds, by the source's clock")
    fields: dict[Annotated[str, StringConstraints(pattern=_full(PATTERNS["field"]))],
                 float | int | str | bool | None] = Field(default_factory=dict, max_length=MAX_FIELDS)


def json_body_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


OBSERVATIONS_BODY = json_body_openapi({"oneOf": [
    ObservationIn.model_json_schema(ref_template="#/components/schemas/{model}"),
    {"type": "array", "items": {"$ref": "#/components/schemas/ObservationIn"}}]})
PHYSICS_BODY = json_body_openapi(PhysicsIn.model_json_schema())

# -- the world model's queries ------------------------------------------------

EntityId = Annotated[str, StringConstraints(pattern=_full(PATTERNS["entity"]))]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class PredictIn(Strict):
    entities: list[EntityId] | None = Field(None, min_length=1, max_length=MAX_ENTITIES,
                                            description=f"default: every entity of the world (up to {MAX_ENTITIES})")
    horizon: int = Field(..., ge=1, description="steps to predict (at most the model's max_horizon)")
    actions: dict[EntityId, list[tuple[Finite, Finite]]] | None = Field(
        None, description="impulses (N*s) per entity, one [ax, ay] per step from the first; missing steps are 0")


class Frame(Strict):
    x: float
    y: float
    vx: float
    vy: float
    radius: float | None = Field(None, gt=0)
    mass: float | None = Field(None, gt=0)


class SurpriseIn(Strict):
    observed: dict[EntityId, list[Frame]] = Field(..., min_length=1,
                                                  description="per entity, the frames observed after the current state")
    entities: list[EntityId] | None = Field(None, min_length=1, max_length=MAX_ENTITIES)


class Goal(Strict):
    x: float
    y: float
    radius: float = Field(..., gt=0)


class PlanIn(Strict):
    entity: EntityId
    goal: Goal
    horizon: int = Field(..., ge=1)
    budget: int = Field(256, ge=MIN_BUDGET, le=MAX_BUDGET, description="candidate action sequences evaluated")
    entities: list[EntityId] | None = Field(None, min_length=1, max_length=MAX_ENTITIES)


# -- responses ------------------------------------------------------------------


def revisions(v: Versioned) -> dict[str, int]:
    return {"revision": v.revision, "create_revision": v.create_revision, "version": v.version}


def read_document(v: Versioned, value_name: str = "value", **names: str) -> dict[str, Any]:
    """A CP value as read: `names` first (world, key), the value under `value_name`, its revisions."""
    return {**names, value_name: v.value, **revisions(v), "store_revision": v.store_revision,
            "consistency": v.consistency}


def read_headers(v: Versioned) -> dict[str, str]:
    return {"ETag": etag(v.revision), "X-Worldstate-Revision": str(v.store_revision),
            "X-Worldstate-Consistency": v.consistency}


def entity_document(e: EntityState) -> dict[str, Any]:
    return {
        "entity": e.entity,
        "fields": {k: {"value": f.value, "hlc": f.hlc, "node": f.node, "source": f.source,
                       "event_id": f.event_id, "observed_at_ms": f.observed_at_ms} for k, f in e.fields.items()},
        "counters": {"observations": {"by_source": e.counters, "total": sum(e.counters.values())}},
    }


def reflects_document(r: Reflects) -> dict[str, Any]:
    return {"replica": r.replica, "watermark": r.watermark, "hlc": r.hlc, "behind": r.behind,
            "replication": r.replication}


# The model's answer documents: HTTP's bodies, and gRPC's ModelAnswer.answer (rpc/model_calls.py).
def predict_document(world: str, horizon: int, a: Answer) -> dict[str, Any]:
    p = a.result
    trajectories = {ent: {"positions": p.positions[:, i].tolist(), "velocities": p.velocities[:, i].tolist()}
                    for i, ent in enumerate(a.entities)}
    return {"world": world, "horizon": horizon, "time_step": a.time_step, "trajectories": trajectories,
            "skipped": a.skipped, "provenance": a.provenance}


def surprise_document(world: str, observed: Any, a: Answer) -> dict[str, Any]:
    """`observed`: the entities the query observed (only those are scored)."""
    r = a.result
    scores = {ent: float(r.per_entity[i]) for i, ent in enumerate(a.entities) if ent in observed}
    worst = max(scores, key=scores.__getitem__)
    return {"world": world, "scores": scores, "most_surprising": worst, "score": scores[worst],
            "threshold": r.threshold, "surprising": scores[worst] > r.threshold,
            "bodies": a.entities, "skipped": a.skipped, "provenance": a.provenance}


def plan_document(world: str, entity: str, a: Answer) -> dict[str, Any]:
    p = a.result
    return {"world": world, "entity": entity, "actions": p.actions.tolist(),
            "predicted_path": p.predicted_path.tolist(), "final_energy": p.predicted_distance,
            "reaches_goal": p.reaches_goal, "bodies": a.entities, "skipped": a.skipped,
            "provenance": a.provenance}
