"""The FastAPI application of one worldstate node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

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
    for router in (health.router, worlds.router, params.router, physics.router, watch.router,
                   observations.router, model.router):
        app.include_router(router)
    if settings.faults:
        app.include_router(faults.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
