"""Worlds: created in the CP tier before observations of them are accepted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from api import conditions
from api.body import json_body
from api.deps import Consistency, ConsistencyQuery, NodeDep
from api.schemas import read_document, read_headers

router = APIRouter(prefix="/v1/worlds", tags=["worlds"])


@router.put("/{world}")
async def put_world(
    world: str, request: Request, n: NodeDep,
    if_match: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Create or update a world's metadata document (any JSON object, `{}` by default)."""
    n.worlds.check(world)
    meta = await json_body(request) if (await request.body()).strip() else {}
    result = await n.worlds.put(world, meta, conditions.parse(if_match, if_none_match))
    return JSONResponse({"world": world, "revision": result.revision}, status_code=201 if result.created else 200,
                        headers={"ETag": conditions.etag(result.revision)})


@router.get("/{world}")
async def get_world(world: str, n: NodeDep, consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    value = await n.worlds.get(world, consistency)
    return JSONResponse(read_document(value, "meta", world=world), headers=read_headers(value))
