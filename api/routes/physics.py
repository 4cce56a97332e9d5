"""A world's physics constants as one validated CP document."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from api import conditions
from api.body import json_body
from api.deps import Consistency, ConsistencyQuery, NodeDep
from api.routes.params import written
from api.schemas import PHYSICS_BODY, read_document, read_headers
from service.params import PHYSICS_KEY

router = APIRouter(prefix="/v1/worlds/{world}", tags=["physics"])


@router.get("/physics")
async def get_physics(world: str, n: NodeDep, consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    value = await n.params.get(world, PHYSICS_KEY, consistency)
    return JSONResponse(read_document(value, "physics", world=world, key=PHYSICS_KEY), headers=read_headers(value))


@router.put("/physics", openapi_extra=PHYSICS_BODY)
async def put_physics(
    world: str, request: Request, n: NodeDep,
    if_match: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    n.params.check(world, PHYSICS_KEY)
    doc = await json_body(request)
    pre = conditions.parse(if_match, if_none_match)
    return written(world, PHYSICS_KEY, await n.params.put(world, PHYSICS_KEY, doc, pre))
