"""HTTP request metrics, for `GET /metrics` (api/routes/metrics.py).

A pure ASGI middleware, not Starlette's BaseHTTPMiddleware, so event streams pass
through untouched: a stream is timed to its response start (its length is the
client's choice, not the node's speed), every other answer to its last body byte.

Labels stay bounded: the route is the template the router matched
(`/v1/worlds/{world}/params/{key}`), never the raw path, and "other" when no route
takes the path; a method outside the standard ones is "other" too.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Histogram
from starlette.routing import BaseRoute, Match

from service.metrics import Metrics

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_CONVERTER = re.compile(r"\{(\w+):\w+\}")


@functools.lru_cache(maxsize=256)
def template(path: str) -> str:
    """A route's path as its label: `{key:path}` reads `{key}`, as the OpenAPI document has it."""
    return _CONVERTER.sub(r"{\1}", path)


class HttpMetrics:
    """Times every HTTP request into `worldstate_http_request_duration_seconds`."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.duration: Histogram = metrics.http_duration
        self.routes = routes  # the app's, to name the route of an answer given before routing (a 401)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers if the app raises before it starts a response
        timed = False

        async def timing_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, timed
            if message["type"] == "http.response.start":
                status = message["status"]
                if is_stream(message.get("headers", ())):
                    self._observe(scope, status, start)
                    timed = True
            await send(message)

        try:
            await self.app(scope, receive, timing_send)
        finally:
            if not timed:
                self._observe(scope, status, start)

    def _observe(self, scope: Scope, status: int, start: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "other"
        self.duration.labels(method, self._route(scope), str(status)).observe(time.perf_counter() - start)

    def _route(self, scope: Scope) -> str:
        # The router leaves the route it chose in the scope (Starlette puts it there for plain
        # routes too, so the GET of one param is named by its template).
        route = scope.get("route")
        if route is None:
            # Answered before routing (a missing key, a body too large): name the route that
            # would have taken the path, so a 401 counts under its operation.
            route = next((r for r in self.routes if r.matches(scope)[0] is not Match.NONE), None)
        path = getattr(route, "path", None)
        return template(path) if isinstance(path, str) else "other"


def is_stream(headers: Any) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)

