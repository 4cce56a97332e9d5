"""The AP tier over HTTP: post observations, delete entities, read merged entities, and
subscribe to their changes (server-sent events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.body import json_body
from api.deps import NodeDep
from api.problems import problem_of
from api.schemas import OBSERVATIONS_BODY, entity_document, reflects_document
from api.sse import with_heartbeats
from service.errors import SlowConsumer
from service.subscriptions import Progress

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


def _sse(event: str, data: dict[str, Any], id_: str | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n".encode()


def _problem_data(e: Exception) -> dict[str, Any]:
    p = problem_of(e)
    return {"type": f"/problems/{p.type.slug}", "status": p.status, "detail": p.detail, **p.extra}


# Declared before /entities/{entity}, which would otherwise take "stream" as an entity id: an entity
# named "stream" is written, deleted and listed as any other, but not read by GET on its own path.
@router.get("/entities/stream")
async def stream_entities(
    world: str,
    n: NodeDep,
    entity: str | None = Query(None, description="only this entity's changes"),
    prefix: str | None = Query(None, description="only changes of entities whose id starts with it"),
    after: str | None = Query(None, description="a position (an event's id) to resume after; Last-Event-ID wins"),
    progress_s: float | None = Query(None, ge=0.05, le=60, description=(
        "a comment `: progress P` at least this often while nothing matches: every change of the "
        "subscription up to position P has been sent; none when absent")),
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    position = last_event_id if last_event_id is not None else after
    await n.subscriptions.check(world, entity=entity, prefix=prefix, after=position)
    if position is None:  # from now: fixed here, so whatever is written after the first line is delivered
        position = await n.subscriptions.head()
    changes = n.subscriptions.changes(world, entity=entity, prefix=prefix, after=position, progress_s=progress_s)

    async def stream() -> AsyncIterator[bytes]:
        yield f": subscribed after {position}\n\n".encode()
        try:
            async for c in changes:
                if isinstance(c, Progress):
                    yield f": progress {c.id}\n\n".encode()
                    continue
                yield _sse("change", {"entity": c.entity, "fields": c.fields, "deleted": c.deleted, "hlc": c.hlc,
                                      "node": c.node, "origin": c.origin}, c.id)
        except SlowConsumer as e:
            yield _sse("slow-consumer", _problem_data(e))
        except Exception as e:  # noqa: BLE001 - trimmed, or a tier gone: said in the stream, which then ends
            yield _sse("error", _problem_data(e))
        finally:
            await changes.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(with_heartbeats(stream(), n.settings.sse_heartbeat_s), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@router.get("/entities/{entity}")
async def get_entity(world: str, entity: str, n: NodeDep, token: str | None = TOKEN,
                     wait_ms: int | None = WAIT_MS) -> JSONResponse:
    state, reflects = await n.observations.get(world, entity, token, wait_ms)
    return JSONResponse({"world": world, **entity_document(state), **reflects_document(reflects)})


EVENT_ID = Query(None, description="an id for this delete, so that a retry is a duplicate (ids are per entity, "
                                   "shared with observations; default: one the node makes)")


@router.delete("/entities/{entity}", status_code=202)
async def delete_entity(world: str, entity: str, n: NodeDep, event_id: str | None = EVENT_ID) -> JSONResponse:
    d = await n.observations.delete(world, entity, event_id)
    return JSONResponse({"replica": d.replica, "hlc": d.hlc, "token": d.token, "duplicate": d.duplicate},
                        status_code=202)


@router.get("/entities")
async def list_entities(world: str, n: NodeDep, limit: int = Query(100, ge=1, le=1000),
                        after: str | None = Query(None, description="`next.after` of the previous page"),
                        token: str | None = TOKEN, wait_ms: int | None = WAIT_MS) -> JSONResponse:
    states, cursor, reflects = await n.observations.list(world, after, limit, token, wait_ms)
    items = [entity_document(s) for s in states]
    nxt = {"after": cursor} if cursor is not None else None
    return JSONResponse({"world": world, "items": items, "next": nxt, **reflects_document(reflects)})
