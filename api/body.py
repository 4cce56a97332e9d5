"""Request bodies: a size limit enforced while reading, and strict JSON."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response


class BodyLimit:
    """Refuse bodies over `max_bytes` with 413, by Content-Length or while streaming.

    Counting the stream too matters: a chunked request has no Content-Length.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            too_big = Problem("payload-too-large", f"body over {self.max_bytes} bytes", limit=self.max_bytes)
            await problem_response(too_big, scope.get("path"))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise Problem("payload-too-large", f"body over {self.max_bytes} bytes", limit=self.max_bytes)
            return message

        await self.app(scope, counted, send)


async def json_body(request: Request) -> Any:
    """The body as one JSON value; NaN, Infinity, numbers that overflow a double and
    non-UTF-8 are refused (orjson: strict RFC 8259, and about twice as fast as json)."""
    raw = await request.body()
    if not raw.strip():
        raise Problem("invalid-json", "the body is empty; send one JSON value")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise Problem("invalid-json", f"body is not valid JSON: {e}") from None
