"""A world's physics constants as one validated CP document."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from api.body import json_body
from api.deps import Consistency, ConsistencyQuery, node
from api.routes.params import validate_value, write
from api.schemas import entry_document, read_headers
from consistency import cp_keys
from service.node import Node

router = APIRouter(prefix="/v1/worlds/{world}", tags=["physics"])
NodeDep = Annotated[Node, Depends(node)]


@router.get("/physics")
async def get_physics(world: str, n: NodeDep, consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    entry = await n.cp.get(cp_keys.param_path(world, cp_keys.PHYSICS_KEY), consistency)
    doc = entry_document(world, cp_keys.PHYSICS_KEY, entry)
    doc["physics"] = doc.pop("value")
    return JSONResponse(doc, headers=read_headers(entry))


@router.put("/physics")
async def put_physics(
    world: str, request: Request, n: NodeDep,
    if_match: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    cp_keys.check_world(world)
    value = validate_value(cp_keys.PHYSICS_KEY, await json_body(request))
    return await write(n, world, cp_keys.PHYSICS_KEY, value, if_match, if_none_match)
