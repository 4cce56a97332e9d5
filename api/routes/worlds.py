"""Worlds: created in the CP tier before observations of them are accepted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from api import conditions
from api.body import json_body
from api.deps import Consistency, ConsistencyQuery, node
from api.problems import Problem
from api.schemas import entry_document, read_headers
from consistency import cp_keys
from service.node import Node

router = APIRouter(prefix="/v1/worlds", tags=["worlds"])
NodeDep = Annotated[Node, Depends(node)]


@router.put("/{world}")
async def put_world(
    world: str, request: Request, n: NodeDep,
    if_match: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Create or update a world's metadata document (any JSON object, `{}` by default)."""
    path = cp_keys.world_root(world) + "/meta"
    meta = await json_body(request) if (await request.body()).strip() else {}
    if not isinstance(meta, dict):
        raise Problem("validation-error", "world metadata must be a JSON object")
    pre = conditions.parse(if_match, if_none_match)
    result = await n.cp.put(path, meta, if_revision=pre.if_revision, create_only=pre.create_only,
                            must_exist=pre.must_exist)
    n.worlds.add(world)
    return JSONResponse({"world": world, "revision": result.revision}, status_code=201 if pre.create_only else 200,
                        headers={"ETag": conditions.etag(result.revision)})


@router.get("/{world}")
async def get_world(world: str, n: NodeDep, consistency: Consistency = ConsistencyQuery) -> JSONResponse:
    entry = await n.cp.get(cp_keys.world_root(world) + "/meta", consistency)
    doc = entry_document(world, "meta", entry)
    doc["meta"] = doc.pop("value")
    del doc["key"]
    return JSONResponse(doc, headers=read_headers(entry))
