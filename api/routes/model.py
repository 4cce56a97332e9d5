"""The world model over HTTP: its manifest, and predict / surprise / plan against a world's state."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse, Response

from api import conditions
from api.body import json_body
from api.deps import Consistency, ConsistencyQuery, NodeDep
from api.schemas import (PlanIn, PredictIn, SurpriseIn, plan_document, predict_document, read_document, read_headers,
                         surprise_document)

router = APIRouter(tags=["world model"])
T = TypeVar("T")
DISCONNECT_POLL_S = 0.1
CLIENT_GONE = 499  # nginx's "client closed request": logged, never received


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


@router.get("/v1/models/blobs/{digest}", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the blob's bytes"}})
async def get_blob(n: NodeDep, digest: str = Path(pattern="^[0-9a-f]{64}$",
                                                  description="the blob's sha256, as a manifest names it")) -> Response:
    """A model blob by its hash (what an edge node loads): the bytes, checked against the hash
    before they are sent; the client checks them again on arrival."""
    data = await n.models.blob(digest)
    return Response(data, media_type="application/octet-stream",
                    headers={"ETag": f'"{digest}"', "Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/v1/models/current")
async def current_model(n: NodeDep) -> dict[str, Any]:
    """The model this node serves right now (it follows the manifest within moments), and its
    queue of plan and surprise jobs."""
    return {**n.models.status(), "work": n.queries.work.status()}


async def _while_connected(request: Request, query: Callable[[threading.Event], Awaitable[T]]) -> T | None:
    """Run a model query; if the client disconnects first, tell the query to stop (its work
    would be for no one) and answer None. The event is set from here, read by the model thread."""
    cancel = threading.Event()
    task = asyncio.ensure_future(query(cancel))

    async def gone() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)

    watch = asyncio.ensure_future(gone())
    await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        watch.cancel()
        return task.result()
    cancel.set()
    try:
        await task
    except Exception:  # noqa: BLE001 - Cancelled, or whatever it failed with: nobody is listening
        pass
    return None


@router.post("/v1/worlds/{world}/predict")
async def predict(world: str, body: PredictIn, n: NodeDep,
                  consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    a = await n.queries.predict(world, body.horizon, body.entities, body.actions, consistency)
    return JSONResponse(predict_document(world, body.horizon, a))


@router.post("/v1/worlds/{world}/surprise")
async def surprise(world: str, body: SurpriseIn, n: NodeDep, request: Request,
                   consistency: Consistency = ConsistencyQuery) -> Response:
    observed = {ent: [f.model_dump() for f in frames] for ent, frames in body.observed.items()}
    a = await _while_connected(request, lambda cancel: n.queries.surprise(world, observed, body.entities,
                                                                          consistency, cancel))
    if a is None:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse(surprise_document(world, body.observed, a))


@router.post("/v1/worlds/{world}/plan")
async def plan(world: str, body: PlanIn, n: NodeDep, request: Request,
               consistency: Consistency = ConsistencyQuery) -> Response:
    goal = (body.goal.x, body.goal.y, body.goal.radius)
    a = await _while_connected(request, lambda cancel: n.queries.plan(world, body.entity, goal, body.horizon,
                                                                      body.budget, body.entities, consistency,
                                                                      cancel))
    if a is None:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse(plan_document(world, body.entity, a))
