"""Worlds: created in the CP tier before observations of them are accepted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from api import conditions
from api.body import json_body
from api.deps import Consistency, ConsistencyQuery, NodeDep
from api.schemas import read_document, read_headers
from service.errors import store
from service.keys import acting

router = APIRouter(prefix="/v1/worlds", tags=["worlds"])


@router.get("")
async def list_worlds(
    n: NodeDep,
    after: str = Query("", description="the last world of the previous page", max_length=64),
    limit: int = Query(100, ge=1, le=1000),
) -> JSONResponse:
    """The worlds the CP tier holds, that the request's key may read, in key order."""
    if after:
        n.worlds.check(after)
    key = acting.get()
    names, revision, more = await n.worlds.list(after, limit, lambda w: key is None or key.allows("read", w))
    return JSONResponse({"worlds": names, "revision": revision,
                         "next": {"after": names[-1]} if more and names else None},
                        headers={"X-Worldstate-Revision": str(revision)})


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


@router.get("/{world}/positions")
async def get_positions(world: str, n: NodeDep) -> dict[str, object]:
    """Where this node's tiers are now, read after the request arrived: the CP tier's revision
    (a linearizable read, which also reads the model manifest) and the head of this region's
    changes log. Every CP write acknowledged before the request has a revision at or below
    `cp_revision`, every observation this region acknowledged before it a position at or below
    `changes`: a follower that has been sent both (the progress comments of the watch and the
    entity stream) reflects everything up to the moment it sent this request. Edge nodes ask
    it to state their staleness."""
    n.worlds.check(world)
    await n.worlds.require(world)
    try:
        value = await n.models.manifest()
        revision = value.store_revision
        manifest: dict[str, object] | None = {"hash": value.value.get("hash"), "version": value.value.get("version"),
                                              "revision": value.revision}
    except store.NotFound:
        revision, manifest = await n.cp.current_revision(), None
    return {"world": world, "region": n.settings.region, "cp_revision": revision,
            "changes": await n.subscriptions.head(), "manifest": manifest}
