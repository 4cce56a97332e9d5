"""An edge node's HTTP API: the core's paths and documents for what an edge answers (reads of
its world's params, physics and entities, observations, predict, surprise and plan), each
answer with a `staleness` member and X-Worldstate-Stale-Ms / X-Worldstate-As-Of headers, the
core's problem types for errors, and `GET /v1/edge` for the edge's own state.

Clients authenticate with the edge's access key (its --access-key-file, or by default the key
it uses with the core): an edge is a trusted node near its sensors, and holds no key list.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from api import problems
from api.auth import host_allowed
from api.body import json_body
from api.problems import Problem, problem_response
from api.request_ids import RequestIds
from api.schemas import PlanIn, PredictIn, SurpriseIn, entity_document, plan_document, predict_document, \
    surprise_document
from consistency import cp_keys
from edge.config import EdgeConfig
from edge.node import Edge
from service.errors import EntityNotFound, InvalidInput

MAX_STALENESS = Query(None, ge=0, le=86_400_000, description=(
    "accept an answer up to this stale (ms) instead of the edge's --max-staleness; the answer says so"))


def _labelled(doc: dict[str, Any], label: dict[str, Any], status: int = 200) -> JSONResponse:
    headers = {"X-Worldstate-Stale-Ms": str(label["stale_ms"]), "X-Worldstate-As-Of": str(label["as_of_ms"])}
    return JSONResponse({**doc, "staleness": label}, status_code=status, headers=headers)


def create_app(cfg: EdgeConfig) -> FastAPI:
    edge = Edge(cfg)
    token = cfg.access_key or cfg.key

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await edge.start()
        try:
            yield
        finally:
            await edge.stop()

    app = FastAPI(title="worldstate edge", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.edge = edge
    problems.install(app)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if not host_allowed(request.headers.get("host", ""), tuple(cfg.allowed_hosts)):
            return problem_response(Problem("host-not-allowed", "this Host is not one the edge answers to"),
                                    request.url.path)
        if request.url.path.startswith("/v1/") and token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return problem_response(Problem("unauthorized", "send the edge's access key as a Bearer token",
                                                headers={"WWW-Authenticate": "Bearer"}), request.url.path)
        return await call_next(request)

    app.add_middleware(RequestIds, slow_s=1.0, access_log=False)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready while the edge can answer within its --max-staleness."""
        status = edge.status()
        fresh = status["stale_ms"] is not None and status["stale_ms"] <= status["max_staleness_ms"]
        return JSONResponse({"status": "ready" if fresh else "stale", **status}, status_code=200 if fresh else 503)

    @app.get("/v1/edge")
    async def edge_status() -> dict[str, Any]:
        return edge.status()

    @app.get("/v1/worlds/{world}/physics")
    async def get_physics(world: str, max_staleness_ms: int | None = MAX_STALENESS) -> JSONResponse:
        return _param(world, cp_keys.PHYSICS_KEY, "physics", max_staleness_ms)

    @app.get("/v1/worlds/{world}/params/{key:path}")
    async def get_param(world: str, key: str, max_staleness_ms: int | None = MAX_STALENESS) -> JSONResponse:
        return _param(world, key, "value", max_staleness_ms)

    def _param(world: str, key: str, name: str, max_staleness_ms: int | None) -> JSONResponse:
        edge.holds(world)
        cp_keys.check_key(key)
        label = edge.staleness(max_staleness_ms)
        if key not in edge.store.params:
            raise Problem("not-found", f"{key} not found at revision {label['cp_revision']} on this edge")
        value, revision = edge.store.params[key]
        return _labelled({"world": world, "key": key, name: value, "revision": revision,
                          "store_revision": label["cp_revision"], "consistency": "edge"}, label)

    @app.get("/v1/worlds/{world}/entities/{entity}")
    async def get_entity(world: str, entity: str, max_staleness_ms: int | None = MAX_STALENESS) -> JSONResponse:
        edge.holds(world, entity)
        label = edge.staleness(max_staleness_ms)
        state = await edge.queries.ap.get_entity(world, entity)
        if state is None:
            raise EntityNotFound(f"no observations of {entity} on this edge")
        doc = entity_document(state)
        doc.pop("counters")  # the entity stream carries fields, not per-source counts
        return _labelled({"world": world, **doc}, label)

    @app.get("/v1/worlds/{world}/entities")
    async def list_entities(world: str, after: str | None = None, limit: int = Query(100, ge=1, le=1000),
                            max_staleness_ms: int | None = MAX_STALENESS) -> JSONResponse:
        edge.holds(world)
        label = edge.staleness(max_staleness_ms)
        page, more = await edge.queries.ap.list_entities(world, after, limit)
        items = [{k: v for k, v in entity_document(s).items() if k != "counters"} for s in page]
        nxt = {"after": page[-1].entity} if more and page else None
        return _labelled({"world": world, "items": items, "next": nxt}, label)

    @app.post("/v1/worlds/{world}/observations", status_code=202)
    async def post_observations(world: str, request: Request) -> JSONResponse:
        """Stored on the edge's disk before the answer, forwarded to its region after (202)."""
        body = await json_body(request)
        if not isinstance(body, (list, dict)):
            raise InvalidInput("an observation (an object) or a batch of them (an array)")
        return JSONResponse(edge.observe(world, body), status_code=202)

    @app.post("/v1/worlds/{world}/predict")
    async def predict(world: str, body: PredictIn, max_staleness_ms: int | None = MAX_STALENESS) -> JSONResponse:
        edge.holds(world)
        label = edge.staleness(max_staleness_ms)
        a = await edge.queries.predict(world, body.horizon, body.entities, body.actions)
        return _labelled(predict_document(world, body.horizon, a), label)

    @app.post("/v1/worlds/{world}/surprise")
    async def surprise(world: str, body: SurpriseIn, max_staleness_ms: int | None = MAX_STALENESS) -> JSONResponse:
        edge.holds(world)
        label = edge.staleness(max_staleness_ms)
        observed = {ent: [f.model_dump() for f in frames] for ent, frames in body.observed.items()}
        a = await edge.queries.surprise(world, observed, body.entities)
        return _labelled(surprise_document(world, body.observed, a), label)

    @app.post("/v1/worlds/{world}/plan")
    async def plan(world: str, body: PlanIn, max_staleness_ms: int | None = MAX_STALENESS) -> JSONResponse:
        edge.holds(world)
        label = edge.staleness(max_staleness_ms)
        goal = (body.goal.x, body.goal.y, body.goal.radius)
        a = await edge.queries.plan(world, body.entity, goal, body.horizon, body.budget, body.entities)
        return _labelled(plan_document(world, body.entity, a), label)

    return app
