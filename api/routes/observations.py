"""The AP tier over HTTP: post observations, read merged entities."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api import observations
from api.body import json_body
from api.deps import node
from api.problems import Problem
from consistency import ap_keys, cp_keys
from consistency.ap_store import EntityState
from service.node import Node

router = APIRouter(prefix="/v1/worlds/{world}", tags=["observations"])
NodeDep = Annotated[Node, Depends(node)]
_TOKEN = re.compile(rf"({ap_keys.REGION_RE.pattern}):(\d{{1,20}}-\d{{1,20}})")


async def _provenance(n: Node) -> dict[str, Any]:
    """What an AP answer reflects: the replica, what it has applied from each region, who lags."""
    return {"replica": n.settings.region, "watermark": await n.ap.watermark(),
            "hlc": n.hlc.last.to_string(), "behind": n.replicator.behind(),
            "replication": n.replicator.status()}


def entity_document(e: EntityState) -> dict[str, Any]:
    return {
        "entity": e.entity,
        "fields": {k: {"value": f.value, "hlc": f.hlc, "node": f.node, "source": f.source,
                       "event_id": f.event_id, "observed_at_ms": f.observed_at_ms} for k, f in e.fields.items()},
        "counters": {"observations": {"by_source": e.counters, "total": sum(e.counters.values())}},
    }


@router.post("/observations", status_code=202, openapi_extra=observations.OPENAPI_BODY)
async def post_observations(world: str, request: Request, n: NodeDep) -> JSONResponse:
    cp_keys.check_world(world)
    body = await json_body(request)
    s = n.settings
    obs = observations.parse(body, world, s.max_batch, n.now_ms(), s.max_drift_ms)
    await n.worlds.require(world)
    result = await n.ap.ingest(obs)
    token_id = result.last_id or await n.ap.last_id()
    duplicates = [o.event_id for o, a in zip(obs, result.accepted) if not a]
    return JSONResponse({
        "replica": s.region, "accepted": len(obs) - len(duplicates), "duplicate": len(duplicates),
        "duplicates": duplicates, "hlc": result.stamp, "token": f"{s.region}:{token_id}",
        "behind": n.replicator.behind(),
    }, status_code=202)


async def _honour_token(n: Node, token: str | None, wait_ms: int | None) -> None:
    if token is None:
        return
    m = _TOKEN.fullmatch(token)
    if not m:
        raise Problem("invalid-token", f"token {token!r} is not REGION:STREAM_ID")
    region, sid = m.groups()
    if region != n.settings.region and region not in n.settings.peers:
        raise Problem("token-unknown", f"this replica ({n.settings.region}) does not replicate from {region!r}",
                      region=region)
    wait_s = n.settings.read_wait_s if wait_ms is None else min(wait_ms / 1000, n.settings.read_wait_s)
    if not await n.ap.wait_applied(region, sid, wait_s):
        raise Problem("not-yet-consistent", f"replica {n.settings.region} has not applied {token} "
                      f"after {wait_s:.1f}s", token=token, behind=n.replicator.behind())


@router.get("/entities/{entity}")
async def get_entity(world: str, entity: str, n: NodeDep,
                     token: str | None = Query(None, description="causal token from a write: read your writes"),
                     wait_ms: int | None = Query(None, ge=0, le=60000)) -> JSONResponse:
    cp_keys.check_world(world)
    ap_keys.check(ap_keys.ENTITY_RE, "entity", entity)
    await _honour_token(n, token, wait_ms)
    state = await n.ap.get_entity(world, entity)
    if state is None:
        raise Problem("not-found", f"no observations of {entity!r} in {world!r} on replica {n.settings.region}")
    return JSONResponse({"world": world, **entity_document(state), **(await _provenance(n))})


@router.get("/entities")
async def list_entities(world: str, n: NodeDep, limit: int = Query(100, ge=1, le=1000),
                        after: str | None = Query(None, description="last entity id of the previous page"),
                        token: str | None = Query(None), wait_ms: int | None = Query(None, ge=0, le=60000),
                        ) -> JSONResponse:
    cp_keys.check_world(world)
    if after is not None:
        ap_keys.check(ap_keys.ENTITY_RE, "after", after)
    await _honour_token(n, token, wait_ms)
    states, more = await n.ap.list_entities(world, after, limit)
    items = [entity_document(s) for s in states]
    nxt = {"after": items[-1]["entity"]} if more and items else None
    return JSONResponse({"world": world, "items": items, "next": nxt, **(await _provenance(n))})
