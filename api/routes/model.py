"""The world model over HTTP: its manifest, and predict / surprise / plan against a world's state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from api import conditions
from api.body import json_body
from api.deps import Consistency, ConsistencyQuery, NodeDep
from api.schemas import PlanIn, PredictIn, SurpriseIn, read_document, read_headers

router = APIRouter(tags=["world model"])


@router.get("/v1/models/manifest")
async def get_manifest(n: NodeDep, consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    value = await n.models.manifest(consistency)
    return JSONResponse(read_document(value, "manifest", key="models/manifest"), headers=read_headers(value))


@router.put("/v1/models/manifest")
async def put_manifest(request: Request, n: NodeDep, if_match: Annotated[str | None, Header()] = None,
                       if_none_match: Annotated[str | None, Header()] = None) -> JSONResponse:
    """Publish a model: compare-and-swap on the manifest's revision, like any CP value."""
    pre = conditions.parse(if_match, if_none_match)
    doc = await json_body(request)
    result = await n.models.publish(doc, pre)
    return JSONResponse({"revision": result.revision, "hash": doc["hash"]},
                        headers={"ETag": conditions.etag(result.revision)})


@router.get("/v1/models/current")
async def current_model(n: NodeDep) -> dict[str, Any]:
    """The model this node serves right now (it follows the manifest within moments)."""
    return n.models.status()


@router.post("/v1/worlds/{world}/predict")
async def predict(world: str, body: PredictIn, n: NodeDep,
                  consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    a = await n.queries.predict(world, body.horizon, body.entities, body.actions, consistency)
    p = a.result
    trajectories = {ent: {"positions": p.positions[:, i].tolist(), "velocities": p.velocities[:, i].tolist()}
                    for i, ent in enumerate(a.entities)}
    return JSONResponse({"world": world, "horizon": body.horizon, "time_step": a.time_step,
                         "trajectories": trajectories, "skipped": a.skipped, "provenance": a.provenance})


@router.post("/v1/worlds/{world}/surprise")
async def surprise(world: str, body: SurpriseIn, n: NodeDep,
                   consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    observed = {ent: [f.model_dump() for f in frames] for ent, frames in body.observed.items()}
    a = await n.queries.surprise(world, observed, body.entities, consistency)
    r = a.result
    scores = {ent: float(r.per_entity[i]) for i, ent in enumerate(a.entities) if ent in body.observed}
    worst = max(scores, key=scores.__getitem__)
    return JSONResponse({"world": world, "scores": scores, "most_surprising": worst, "score": scores[worst],
                         "threshold": r.threshold, "surprising": scores[worst] > r.threshold,
                         "bodies": a.entities, "skipped": a.skipped, "provenance": a.provenance})


@router.post("/v1/worlds/{world}/plan")
async def plan(world: str, body: PlanIn, n: NodeDep, consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    goal = (body.goal.x, body.goal.y, body.goal.radius)
    a = await n.queries.plan(world, body.entity, goal, body.horizon, body.budget, body.entities, consistency)
    p = a.result
    return JSONResponse({"world": world, "entity": body.entity, "actions": p.actions.tolist(),
                         "predicted_path": p.predicted_path.tolist(), "final_energy": p.predicted_distance,
                         "reaches_goal": p.reaches_goal, "bodies": a.entities, "skipped": a.skipped,
                         "provenance": a.provenance})
