"""CP params: GET/PUT/DELETE one key, list a prefix at one revision."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api import conditions
from api.body import json_body
from api.deps import CONSISTENCIES, Consistency, ConsistencyQuery, node
from api.problems import Problem
from api.schemas import Physics, entry_document, read_headers
from consistency import cp_keys
from service.node import Node

router = APIRouter(prefix="/v1/worlds/{world}", tags=["params"])
NodeDep = Annotated[Node, Depends(node)]


def validate_value(key: str, value: Any) -> Any:
    """The physics document is validated wherever it is written, also through this route."""
    if key != cp_keys.PHYSICS_KEY:
        return value
    try:
        return Physics.model_validate(value).model_dump()
    except ValidationError as e:
        errs = [{"loc": list(x["loc"]), "msg": x["msg"], "type": x["type"]} for x in e.errors()]
        raise Problem("validation-error", "physics document failed validation", errors=errs) from None


async def write(n: Node, world: str, key: str, value: Any, if_match: str | None,
                if_none_match: str | None) -> JSONResponse:
    pre = conditions.parse(if_match, if_none_match)
    result = await n.cp.put(cp_keys.param_path(world, key), value, if_revision=pre.if_revision,
                            create_only=pre.create_only, must_exist=pre.must_exist)
    return JSONResponse({"world": world, "key": key, "revision": result.revision},
                        status_code=201 if pre.create_only else 200,
                        headers={"ETag": conditions.etag(result.revision)})


@router.get("/params")
async def list_params(
    world: str,
    n: NodeDep,
    prefix: str = Query("", description="key prefix, e.g. physics/"),
    limit: int = Query(100, ge=1, le=1000),
    start_after: str | None = Query(None, description="last key of the previous page"),
    revision: int = Query(0, ge=0, description="pin the snapshot of the previous page (0: now)"),
    consistency: Consistency = ConsistencyQuery,
) -> JSONResponse:
    base = cp_keys.params_prefix(world)
    after = cp_keys.param_path(world, start_after) if start_after else None
    listing = await n.cp.list(cp_keys.params_prefix(world, prefix), consistency=consistency, limit=limit,
                              start_after=after, revision=revision)
    items = [entry_document(world, e.key[len(base):], e) for e in listing.entries]
    for item in items:
        del item["world"], item["store_revision"], item["consistency"]
    nxt = {"start_after": items[-1]["key"], "revision": listing.revision} if listing.more and items else None
    return JSONResponse(
        {"world": world, "prefix": prefix, "revision": listing.revision, "consistency": consistency,
         "items": items, "next": nxt},
        headers={"X-Worldstate-Revision": str(listing.revision), "X-Worldstate-Consistency": consistency},
    )


GET_PATH = "/v1/worlds/{world}/params/{key:path}"


async def get_param(request: Request) -> JSONResponse:
    """The hottest CP read, as a plain Starlette endpoint (`create_app` mounts it ahead
    of the routers).

    Why not a FastAPI route: its per-request dependency solving and parameter
    validation took 60 of the route's 90 us in process, and put the API's p50 at
    1.57x raw aetcd's against a 1.5x target (bench/cp.py). It parses its one query
    parameter itself; `GET_OPENAPI` documents it.
    """
    world, key = request.path_params["world"], request.path_params["key"]
    consistency = request.query_params.get("consistency", "linearizable")
    if consistency not in CONSISTENCIES:
        raise Problem("validation-error", "request failed validation", errors=[{
            "loc": ["query", "consistency"], "msg": "Input should be 'linearizable' or 'serializable'",
            "type": "literal_error"}])
    node: Node = request.app.state.node
    entry = await node.cp.get(cp_keys.param_path(world, key), consistency)  # type: ignore[arg-type]
    return JSONResponse(entry_document(world, key, entry), headers=read_headers(entry))


GET_OPENAPI = {
    "tags": ["params"], "summary": "Get Param", "operationId": "get_param",
    "parameters": [
        {"name": "world", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "'/'-separated segments, e.g. physics/gravity"},
        {"name": "consistency", "in": "query", "required": False, "description": ConsistencyQuery.description,
         "schema": {"enum": list(CONSISTENCIES), "default": "linearizable"}},
    ],
    "responses": {"200": {"description": "the value, its revisions and the consistency it was read at; "
                                         "ETag is its mod revision"}},
}


@router.put("/params/{key:path}")
async def put_param(
    world: str, key: str, request: Request, n: NodeDep,
    if_match: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    cp_keys.param_path(world, key)  # a bad key is refused before the body is read
    value = validate_value(key, await json_body(request))
    return await write(n, world, key, value, if_match, if_none_match)


@router.delete("/params/{key:path}")
async def delete_param(
    world: str, key: str, n: NodeDep, if_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    pre = conditions.parse(if_match, None)
    result = await n.cp.delete(cp_keys.param_path(world, key), if_revision=pre.if_revision)
    return JSONResponse({"world": world, "key": key, "deleted": True, "store_revision": result.revision})
