"""CP params: GET/PUT/DELETE one key, list a prefix at one revision."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from api import conditions
from api.body import json_body
from api.deps import CONSISTENCIES, Consistency, ConsistencyQuery, NodeDep
from api.problems import Problem
from api.schemas import read_document, read_headers
from service.node import Node
from service.versioned import MAX_REVISION, Written

router = APIRouter(prefix="/v1/worlds/{world}", tags=["params"])


def written(world: str, key: str, result: Written) -> JSONResponse:
    return JSONResponse({"world": world, "key": key, "revision": result.revision},
                        status_code=201 if result.created else 200,
                        headers={"ETag": conditions.etag(result.revision)})


@router.get("/params")
async def list_params(
    world: str,
    n: NodeDep,
    prefix: str = Query("", description="key prefix, e.g. physics/"),
    limit: int = Query(100, ge=1, le=1000),
    start_after: str | None = Query(None, description="last key of the previous page"),
    revision: int = Query(0, ge=0, le=MAX_REVISION, description="pin the snapshot of the previous page (0: now)"),
    consistency: Consistency = ConsistencyQuery,
) -> JSONResponse:
    page = await n.params.list(world, prefix, limit=limit, start_after=start_after, revision=revision,
                               consistency=consistency)
    items: list[dict[str, Any]] = [{"key": i.key, "value": i.value, "revision": i.revision,
                                    "create_revision": i.create_revision, "version": i.version}
                                   for i in page.items]
    nxt = {"start_after": items[-1]["key"], "revision": page.revision} if page.more and items else None
    return JSONResponse(
        {"world": world, "prefix": prefix, "revision": page.revision, "consistency": consistency,
         "items": items, "next": nxt},
        headers={"X-Worldstate-Revision": str(page.revision), "X-Worldstate-Consistency": consistency},
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
    include = request.query_params.get("include")
    if include not in (None, "writer"):
        raise Problem("validation-error", "request failed validation", errors=[{
            "loc": ["query", "include"], "msg": "Input should be 'writer'", "type": "literal_error"}])
    node: Node = request.app.state.node
    value = await node.params.get(world, key, consistency)  # type: ignore[arg-type]
    doc = read_document(value, world=world, key=key)
    if include == "writer":
        doc["written_by"] = await node.params.writer(world, key, value.revision)
    return JSONResponse(doc, headers=read_headers(value))


GET_OPENAPI = {
    "tags": ["params"], "summary": "Get Param", "operationId": "get_param",
    "parameters": [
        {"name": "world", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "'/'-separated segments, e.g. physics/gravity"},
        {"name": "consistency", "in": "query", "required": False, "description": ConsistencyQuery.description,
         "schema": {"enum": list(CONSISTENCIES), "default": "linearizable"}},
        {"name": "include", "in": "query", "required": False,
         "description": "writer: also answer `written_by`, the API key (id and name) that made this revision "
                        "(null when it was made without auth)", "schema": {"enum": ["writer"]}},
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
    n.params.check(world, key)  # a bad key is refused before the body is read
    value = await json_body(request)
    pre = conditions.parse(if_match, if_none_match)
    return written(world, key, await n.params.put(world, key, value, pre))


@router.delete("/params/{key:path}")
async def delete_param(
    world: str, key: str, n: NodeDep, if_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    pre = conditions.parse(if_match, None)
    store_revision = await n.params.delete(world, key, if_revision=pre.if_revision)
    return JSONResponse({"world": world, "key": key, "deleted": True, "store_revision": store_revision})
