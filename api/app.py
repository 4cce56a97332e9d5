"""The FastAPI application of one worldstate node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import problems
from api.body import BodyLimit
from api.routes import faults, health, model, observations, params, physics, watch, worlds
from service.config import Settings
from service.node import Node


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    # FastAPI's native OpenTelemetry costs time on every request even with no provider
    # configured; it is on only when asked for (WORLDSTATE_TELEMETRY=1).
    telemetry = {} if settings.telemetry else {"tracing": False, "metrics": False, "logs": False,
                                                "operation_spans": False}
    app = FastAPI(title="worldstate", version="0.1.0", lifespan=lifespan, telemetry=telemetry,  # type: ignore[arg-type]
                  description="World state for world-model agents: CP params in etcd, AP observations in Redis.")
    app.state.node = node
    problems.install(app)
    # The hottest routes go first: matching walks the routes in order.
    app.add_route(params.GET_PATH, params.get_param, methods=["GET"])
    for router in (params.router, health.router, worlds.router, physics.router, watch.router,
                   observations.router, model.router):
        app.include_router(router)
    if settings.faults:
        app.include_router(faults.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the GET of one param, which is a plain Starlette route."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["paths"].setdefault(params.GET_PATH.replace(":path", ""), {})["get"] = params.GET_OPENAPI
        app.openapi_schema = schema
    return app.openapi_schema
