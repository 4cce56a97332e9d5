"""The FastAPI application of one worldstate node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import openapi, problems, ui
from api.auth import Guard
from api.body import BodyLimit
from api.metrics import HttpMetrics
from api.request_ids import RequestIds
from api.routes import faults, health, keys, metrics, model, observations, params, physics, watch, worlds
from rpc.server import GrpcServer
from service.config import Settings
from service.node import Node


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        # gRPC beside HTTP, on the same node (and event loop); up before HTTP answers, so a node
        # that reports healthy serves both.
        grpc_server = GrpcServer(node, settings.grpc_host or "127.0.0.1") if settings.grpc_port else None
        try:
            if grpc_server is not None:
                await grpc_server.start()
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            await node.stop()

    # FastAPI's native OpenTelemetry costs time on every request even with no provider
    # configured; it is on only when asked for (WORLDSTATE_TELEMETRY=1).
    telemetry = {} if settings.telemetry else {"tracing": False, "metrics": False, "logs": False,
                                                "operation_spans": False}
    app = FastAPI(title="worldstate", version="0.1.0", lifespan=lifespan, telemetry=telemetry,  # type: ignore[arg-type]
                  description="World state for world-model agents: CP params in etcd, AP observations in Redis.",
                  docs_url=None, redoc_url=None, generate_unique_id_function=openapi.operation_id)
    app.state.node = node
    problems.install(app)
    # The hottest routes go first: matching walks the routes in order.
    app.add_route(params.GET_PATH, params.get_param, methods=["GET"])
    for router in (params.router, health.router, worlds.router, physics.router, watch.router,
                   observations.router, model.router, keys.router, metrics.router):
        app.include_router(router)
    if settings.faults:
        app.include_router(faults.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # Who may send what is settled before a body is read.
    app.add_middleware(Guard, keyring=node.keyring, allowed_hosts=settings.allowed_hosts)
    # Around the guard, so refused requests (401, 403, 413) are timed and counted too.
    app.add_middleware(HttpMetrics, metrics=node.metrics, routes=app.router.routes)
    # Outermost of ours: every answer, refusals included, carries its id, and the log lines
    # written while serving it carry the same one.
    app.add_middleware(RequestIds, slow_s=settings.slow_request_s, access_log=settings.access_log)
    openapi.install(app)
    ui.install(app)
    return app
