"""Server-sent events of every change under a world's params, resumable by revision.

Each event's SSE id is its revision, so a client reconnecting with
Last-Event-ID continues exactly after the last event it saw.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from api.deps import node
from api.problems import Problem, from_store_error
from consistency import cp_keys
from consistency.errors import Compacted
from service.node import Node

router = APIRouter(prefix="/v1/worlds/{world}", tags=["watch"])


def _sse(event: str, data: dict[str, object], id_: int | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n".encode()


@router.get("/watch")
async def watch(
    world: str,
    n: Annotated[Node, Depends(node)],
    prefix: str = Query("", description="key prefix under params/"),
    start_revision: int = Query(0, ge=0, description="first revision to deliver (0: changes after now)"),
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    watched = cp_keys.params_prefix(world, prefix)
    base = cp_keys.params_prefix(world)
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise Problem("validation-error", "Last-Event-ID must be a revision")
        start_revision = int(last_event_id) + 1
    if start_revision == 0:
        start_revision = await n.cp.current_revision() + 1

    async def stream() -> AsyncIterator[bytes]:
        yield b": watching from revision %d\n\n" % start_revision
        try:
            async for ev in n.cp.watch(watched, start_revision):
                yield _sse(ev.type, {"key": ev.key[len(base):], "value": ev.value, "revision": ev.mod_revision},
                           ev.mod_revision)
        except Compacted as c:
            p = from_store_error(c)
            yield _sse("error", {"type": f"/problems/{p.type.slug}", "status": p.status, "detail": p.detail,
                                 "compact_revision": c.compact_revision})

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
