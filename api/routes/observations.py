"""The AP tier over HTTP: post observations, read merged entities."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.body import json_body
from api.deps import NodeDep
from api.schemas import OBSERVATIONS_BODY, entity_document, reflects_document

router = APIRouter(prefix="/v1/worlds/{world}", tags=["observations"])
TOKEN = Query(None, description="causal token from a write: read your writes")
WAIT_MS = Query(None, ge=0, le=60000, description="longest wait for the token (capped by the node)")


@router.post("/observations", status_code=202, openapi_extra=OBSERVATIONS_BODY)
async def post_observations(world: str, request: Request, n: NodeDep) -> JSONResponse:
    r = await n.observations.post(world, await json_body(request))
    return JSONResponse({
        "replica": r.replica, "accepted": r.accepted, "duplicate": len(r.duplicates), "duplicates": r.duplicates,
        "hlc": r.hlc, "token": r.token, "behind": r.behind,
    }, status_code=202)


@router.get("/entities/{entity}")
async def get_entity(world: str, entity: str, n: NodeDep, token: str | None = TOKEN,
                     wait_ms: int | None = WAIT_MS) -> JSONResponse:
    state, reflects = await n.observations.get(world, entity, token, wait_ms)
    return JSONResponse({"world": world, **entity_document(state), **reflects_document(reflects)})


@router.get("/entities")
async def list_entities(world: str, n: NodeDep, limit: int = Query(100, ge=1, le=1000),
                        after: str | None = Query(None, description="last entity id of the previous page"),
                        token: str | None = TOKEN, wait_ms: int | None = WAIT_MS) -> JSONResponse:
    states, more, reflects = await n.observations.list(world, after, limit, token, wait_ms)
    items = [entity_document(s) for s in states]
    nxt = {"after": items[-1]["entity"]} if more and items else None
    return JSONResponse({"world": world, "items": items, "next": nxt, **reflects_document(reflects)})
