"""The world model over HTTP: its manifest, and predict / surprise / plan against a world's state."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api import conditions
from api.body import json_body
from api.deps import Consistency, ConsistencyQuery, node
from api.problems import Problem
from api.schemas import entry_document, read_headers
from consistency import ap_keys, cp_keys
from service import world_view
from service.models import MANIFEST_KEY, ManifestInvalid, check_manifest
from service.node import Node

router = APIRouter(tags=["world model"])
NodeDep = Annotated[Node, Depends(node)]
EntityId = Annotated[str, StringConstraints(pattern=f"^{ap_keys.ENTITY_RE.pattern}$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PredictIn(Strict):
    entities: list[EntityId] | None = Field(None, min_length=1, max_length=world_view.MAX_ENTITIES,
                                            description="default: every entity of the world (up to 64)")
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
    entities: list[EntityId] | None = Field(None, min_length=1, max_length=world_view.MAX_ENTITIES)


class Goal(Strict):
    x: float
    y: float
    radius: float = Field(..., gt=0)


class PlanIn(Strict):
    entity: EntityId
    goal: Goal
    horizon: int = Field(..., ge=1)
    budget: int = Field(256, ge=8, le=65536, description="candidate action sequences evaluated")
    entities: list[EntityId] | None = Field(None, min_length=1, max_length=world_view.MAX_ENTITIES)


def _provenance(n: Node, view: world_view.WorldView, serving: Any) -> dict[str, Any]:
    return {"model": {"hash": serving.manifest["hash"], "version": serving.manifest["version"],
                      "manifest_revision": serving.revision}, **view.provenance()}


async def _view(n: Node, world: str, entities: list[str] | None, consistency: Consistency,
                also: Sequence[str] = ()) -> world_view.WorldView:
    cp_keys.check_world(world)
    wanted = None if entities is None else list(dict.fromkeys([*entities, *also]))
    return await world_view.load(n.cp, n.ap, world, wanted, consistency)


@router.get("/v1/models/manifest")
async def get_manifest(n: NodeDep, consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    entry = await n.cp.get(MANIFEST_KEY, consistency)
    doc = entry_document("", "models/manifest", entry)
    del doc["world"]
    doc["manifest"] = doc.pop("value")
    return JSONResponse(doc, headers=read_headers(entry))


@router.put("/v1/models/manifest")
async def put_manifest(request: Request, n: NodeDep, if_match: Annotated[str | None, Header()] = None,
                       if_none_match: Annotated[str | None, Header()] = None) -> JSONResponse:
    """Publish a model: compare-and-swap on the manifest's revision, like any CP value."""
    pre = conditions.parse(if_match, if_none_match)
    doc = await json_body(request)
    try:
        await asyncio.to_thread(check_manifest, doc, n.settings.checkpoint_dir)
    except ManifestInvalid as e:
        raise Problem("manifest-invalid", str(e)) from None
    result = await n.cp.put(MANIFEST_KEY, doc, if_revision=pre.if_revision, create_only=pre.create_only,
                            must_exist=pre.must_exist)
    return JSONResponse({"revision": result.revision, "hash": doc["hash"]},
                        headers={"ETag": conditions.etag(result.revision)})


@router.get("/v1/models/current")
async def current_model(n: NodeDep) -> dict[str, Any]:
    """The model this node serves right now (it follows the manifest within moments)."""
    return n.models.status()


@router.post("/v1/worlds/{world}/predict")
async def predict(world: str, body: PredictIn, n: NodeDep,
                  consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    n.models.require()  # no model: 503 before any I/O
    view = await _view(n, world, body.entities, consistency)
    actions = None
    if body.actions:
        unknown = sorted(set(body.actions) - set(view.ids))
        if unknown:
            raise Problem("unknown-entity", f"actions for entities not in the query: {unknown}", entities=unknown)
        actions = np.zeros((body.horizon, len(view.ids), 2))
        for ent, steps in body.actions.items():
            if len(steps) > body.horizon:
                raise Problem("validation-error", f"actions[{ent}]: {len(steps)} steps, horizon is {body.horizon}")
            if steps:
                actions[: len(steps), view.ids.index(ent)] = steps
    # Taken with no await before the batcher queues the query: a hot-swap closes the old
    # batcher, and one taken before the reads above could already be closed (a dropped request).
    serving = n.models.require()
    p = await serving.batcher.predict(view.rows, view.physics, body.horizon, actions)
    trajectories = {ent: {"positions": p.positions[:, i].tolist(), "velocities": p.velocities[:, i].tolist()}
                    for i, ent in enumerate(view.ids)}
    return JSONResponse({"world": world, "horizon": body.horizon, "time_step": view.physics["time_step"],
                         "trajectories": trajectories, "provenance": _provenance(n, view, serving)})


@router.post("/v1/worlds/{world}/surprise")
async def surprise(world: str, body: SurpriseIn, n: NodeDep,
                   consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    steps = {len(frames) for frames in body.observed.values()}
    if len(steps) != 1 or 0 in steps:
        raise Problem("validation-error", "every observed entity needs the same, non-zero number of frames")
    k = steps.pop()
    serving = n.models.require()
    view = await _view(n, world, body.entities, consistency, also=list(body.observed))
    observed = np.zeros((k, len(view.ids), 6))
    present = np.zeros((k, len(view.ids)), dtype=bool)
    for ent, frames in body.observed.items():
        i = view.ids.index(ent)
        for t, f in enumerate(frames):
            observed[t, i] = [f.x, f.y, f.vx, f.vy, f.radius or view.rows[i][4], f.mass or view.rows[i][5]]
            present[t, i] = True
    observed[~present, 4:6] = 1.0
    r = await asyncio.to_thread(serving.model.surprise, view.rows, observed, view.physics, None, present)
    scores = {ent: float(r.per_entity[i]) for i, ent in enumerate(view.ids) if ent in body.observed}
    worst = max(scores, key=scores.__getitem__)
    return JSONResponse({"world": world, "scores": scores, "most_surprising": worst, "score": scores[worst],
                         "threshold": r.threshold, "surprising": scores[worst] > r.threshold,
                         "provenance": _provenance(n, view, serving)})


@router.post("/v1/worlds/{world}/plan")
async def plan(world: str, body: PlanIn, n: NodeDep, consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    serving = n.models.require()
    view = await _view(n, world, body.entities, consistency, also=[body.entity])
    goal = [body.goal.x, body.goal.y, body.goal.radius]
    p = await asyncio.to_thread(serving.model.plan, view.rows, view.physics, view.ids.index(body.entity), goal,
                                body.horizon, body.budget)
    return JSONResponse({"world": world, "entity": body.entity, "actions": p.actions.tolist(),
                         "predicted_path": p.predicted_path.tolist(), "final_energy": p.predicted_distance,
                         "reaches_goal": p.reaches_goal, "provenance": _provenance(n, view, serving)})
