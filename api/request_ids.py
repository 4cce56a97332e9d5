"""Request ids: every answer carries X-Request-ID, and the node's log lines about the request
carry the same id (service/logs.py).

A client may send its own id (a trace id it already logs); one that is not 1 to 128 of
[A-Za-z0-9._:-] is replaced by a fresh one rather than refused, as an id exists to help
find a request and refusing the request would help nobody. The answer always says which
id was used.

The same pure ASGI middleware logs a request that answered 5xx or took `slow_s` or longer
(an event stream: to its response start), or every request when `access_log` is on.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

from api.metrics import ASGIApp, Receive, Scope, Send, is_stream
from service.logs import request_id

HEADER = "x-request-id"
VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger("worldstate.requests")


def _given(scope: Scope) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == b"x-request-id":
            try:
                text = v.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if VALID.fullmatch(text) else None
    return None


class RequestIds:
    def __init__(self, app: ASGIApp, *, slow_s: float, access_log: bool) -> None:
        self.app = app
        self.slow_s = slow_s
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _given(scope) or uuid.uuid4().hex
        token = request_id.set(rid)
        start = time.perf_counter()
        status = 500
        took: float | None = None  # an event stream's time to its response start

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status, took
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
                if is_stream(headers):
                    took = time.perf_counter() - start
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start if took is None else took
            if self.access_log or status >= 500 or seconds >= self.slow_s:
                level = logging.WARNING if status >= 500 or seconds >= self.slow_s else logging.INFO
                log.log(level, "%s %s %d %.1f ms", scope["method"], scope["path"], status, seconds * 1000,
                        extra={"method": scope["method"], "path": scope["path"], "status": status,
                               "duration_ms": round(seconds * 1000, 3)})
            request_id.reset(token)
