"""Server-sent events of every change under a world's params, resumable by revision.

Each event's SSE id is its revision, so a client reconnecting with
Last-Event-ID continues exactly after the last event it saw.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.deps import NodeDep
from api.problems import Problem, problem_of
from api.sse import with_heartbeats
from service.errors import store
from service.versioned import MAX_REVISION

router = APIRouter(prefix="/v1/worlds/{world}", tags=["watch"])
# ASCII digits only: str.isdigit() takes '²' and int() then fails.
PROGRESS_DOC = ("about this often, a comment `: progress R`: every change under the prefix up to revision R "
                "has been sent (etcd's progress notification); none when absent")
_EVENT_ID = re.compile(r"[0-9]{1,19}")


def _sse(event: str, data: dict[str, object], id_: int | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n".encode()


@router.get("/watch")
async def watch(
    world: str,
    n: NodeDep,
    prefix: str = Query("", description="key prefix under params/"),
    start_revision: int = Query(0, ge=0, le=MAX_REVISION,
                                description="first revision to deliver (0: changes after now)"),
    progress_s: float | None = Query(None, ge=0.05, le=60, description=PROGRESS_DOC),
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    if last_event_id is not None:
        if not _EVENT_ID.fullmatch(last_event_id) or int(last_event_id) >= MAX_REVISION:
            raise Problem("validation-error", f"Last-Event-ID must be a revision below {MAX_REVISION}", errors=[{
                "loc": ["header", "last-event-id"], "msg": "a revision this node sent as an event id",
                "type": "value_error"}])
        start_revision = int(last_event_id) + 1
    start, changes = await n.params.watch(world, prefix, start_revision, progress_s)

    async def stream() -> AsyncIterator[bytes]:
        yield b": watching from revision %d\n\n" % start
        try:
            async for c in changes:
                if c.type == "progress":
                    yield b": progress %d\n\n" % c.revision
                    continue
                yield _sse(c.type, {"key": c.key, "value": c.value, "revision": c.revision}, c.revision)
        except store.Compacted as compacted:
            p = problem_of(compacted)
            yield _sse("error", {"type": f"/problems/{p.type.slug}", "status": p.status, "detail": p.detail,
                                 "compact_revision": compacted.compact_revision})

    return StreamingResponse(with_heartbeats(stream(), n.settings.sse_heartbeat_s), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
