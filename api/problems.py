"""Errors as RFC 9457 problem+json: one table of problem types, mapped in one place.

Each `type` is a stable relative URI; GET on it returns its description, so a
client can switch on it and a person can look it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from consistency import errors

MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str
    description: str


PROBLEMS = {p.slug: p for p in [
    ProblemType("invalid-key", 400, "Invalid key or world name",
                "World names and key segments use [A-Za-z0-9._-]; keys are '/'-separated segments."),
    ProblemType("invalid-json", 400, "Body is not valid JSON",
                "The body must be one JSON value; NaN and Infinity are not JSON."),
    ProblemType("invalid-precondition", 400, "Malformed If-Match or If-None-Match",
                'If-Match takes a revision as an entity tag ("12") or *; If-None-Match takes only *.'),
    ProblemType("validation-error", 422, "Request failed validation",
                "A field is missing, of the wrong type or out of its stated range; `errors` lists each."),
    ProblemType("not-found", 404, "Not found", "Nothing is stored under this key."),
    ProblemType("precondition-failed", 412, "Revision does not match",
                "A conditional write lost: `current_revision` is the key's revision now (0: absent). "
                "Read it, then decide whether to write again with If-Match set to it."),
    ProblemType("compacted", 410, "Revision compacted",
                "etcd has compacted history past the requested revision; re-read and continue from `compact_revision`."),
    ProblemType("payload-too-large", 413, "Request body too large", "The body exceeds the node's configured limit."),
    ProblemType("unavailable", 503, "Tier unavailable",
                "The CP tier has no quorum or no reachable member, or this region's Redis is unreachable; "
                "nothing was changed. Retry after Retry-After; a CP read can ask for ?consistency=serializable "
                "to accept a possibly stale answer."),
    ProblemType("outcome-unknown", 504, "Write outcome unknown",
                "The write was sent but not answered; it may or may not have been applied. For a CP value, "
                "read the key before trying again: a blind retry can apply a write twice. For observations, "
                "posting the same event ids again is safe: any that were applied come back as duplicates."),
    ProblemType("unknown-world", 404, "Unknown world",
                "Nothing is stored for this world in the CP tier; create it with PUT /v1/worlds/{world} first."),
    ProblemType("batch-too-large", 413, "Batch too large", "A batch holds more observations than the node's limit."),
    ProblemType("clock-drift", 422, "Timestamp too far ahead",
                "observed_at is further ahead of this node's clock than the configured max drift."),
    ProblemType("invalid-token", 400, "Malformed causal token", "A causal token looks like r1:1732170000000-0."),
    ProblemType("token-unknown", 409, "Causal token from an unknown replica",
                "This replica does not replicate from the region the token names, so it can never honour it."),
    ProblemType("not-yet-consistent", 504, "Write not replicated yet",
                "This replica had not applied the write the causal token names within the wait; "
                "retry, read from the replica that took the write, or read without the token."),
    ProblemType("model-unavailable", 503, "No world model loaded",
                "No model has been published (PUT /v1/models/manifest), or the published blob failed its hash "
                "check on this node."),
    ProblemType("manifest-invalid", 422, "Manifest refused",
                "The manifest is malformed, or this node does not hold a blob whose sha256 is its hash."),
    ProblemType("unknown-entity", 404, "Unknown entity", "No observations of this entity on the replica answering."),
    ProblemType("entity-incomplete", 422, "Entity lacks state",
                "The world model needs numeric x, y, vx, vy for every entity in a query (radius and mass default)."),
    ProblemType("model-input", 422, "World model refused the query",
                "Out of what the model accepts: horizon over its max, physics outside its trained ranges, "
                "non-finite numbers, too many entities. `code` names the case."),
    ProblemType("http-error", 400, "HTTP error", "A protocol-level error (unknown path, wrong method, ...)."),
    ProblemType("internal", 500, "Internal error", "An unexpected error; the node's log has the details."),
]}


class Problem(Exception):
    """An error the API raises on purpose, with its problem type and extra members."""

    def __init__(self, slug: str, detail: str, status: int | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.type = PROBLEMS[slug]
        self.detail = detail
        self.status = status or self.type.status
        self.headers = headers or {}
        self.extra = extra


def problem_response(p: Problem, instance: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": f"/problems/{p.type.slug}", "title": p.type.title,
                            "status": p.status, "detail": p.detail}
    if instance:
        body["instance"] = instance
    body.update(p.extra)
    return JSONResponse(body, status_code=p.status, headers=p.headers, media_type=MEDIA_TYPE)


def from_store_error(e: errors.StoreError) -> Problem:
    if isinstance(e, errors.UnknownWorld):
        return Problem("unknown-world", f"world {e.world!r} does not exist", world=e.world)
    if isinstance(e, errors.NotFound):
        return Problem("not-found", str(e))
    if isinstance(e, errors.Conflict):
        etag = {"ETag": f'"{e.current_revision}"'} if e.current_revision else {}
        return Problem("precondition-failed", str(e), headers=etag, current_revision=e.current_revision)
    if isinstance(e, errors.Unavailable):
        return Problem("unavailable", str(e), headers={"Retry-After": str(max(1, round(e.retry_after_s)))})
    if isinstance(e, errors.OutcomeUnknown):
        return Problem("outcome-unknown", str(e))
    if isinstance(e, errors.InvalidKey):
        return Problem("invalid-key", str(e))
    if isinstance(e, errors.Compacted):
        return Problem("compacted", str(e), compact_revision=e.compact_revision)
    return Problem("internal", str(e))


def _world_model_problem(e: Exception) -> Problem:
    from service.models import ModelUnavailable
    from service.world_view import EntityIncomplete, EntityMissing
    from world_model import errors as wm

    if isinstance(e, ModelUnavailable):
        return Problem("model-unavailable", str(e), headers={"Retry-After": "5"})
    if isinstance(e, EntityMissing):
        return Problem("unknown-entity", str(e), entity=e.entity)
    if isinstance(e, EntityIncomplete):
        return Problem("entity-incomplete", str(e), entity=e.entity, missing=e.missing)
    if isinstance(e, wm.UnknownEntity):
        return Problem("unknown-entity", str(e))
    if isinstance(e, wm.InvalidInput):
        return Problem("model-input", str(e), code=e.code)
    if isinstance(e, (wm.Overloaded, wm.BatcherClosed)):
        return Problem("unavailable", str(e), headers={"Retry-After": "1"})
    return Problem("internal", type(e).__name__)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(errors.StoreError)
    async def _store(request: Request, exc: errors.StoreError) -> JSONResponse:
        return problem_response(from_store_error(exc), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                for e in exc.errors()]
        return problem_response(Problem("validation-error", "request failed validation", errors=errs),
                                request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(Problem("http-error", str(exc.detail), status=exc.status_code,
                                        headers=dict(exc.headers or {})), request.url.path)

    from service.models import ModelUnavailable
    from service.world_view import EntityIncomplete, EntityMissing
    from world_model.errors import WorldModelError

    for exc_type in (ModelUnavailable, EntityMissing, EntityIncomplete, WorldModelError):
        @app.exception_handler(exc_type)
        async def _model(request: Request, exc: Exception) -> JSONResponse:
            return problem_response(_world_model_problem(exc), request.url.path)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(Problem("internal", type(exc).__name__), request.url.path)

    @app.get("/problems/{slug}", include_in_schema=False)
    async def _describe(slug: str) -> dict[str, Any]:
        if slug not in PROBLEMS:
            raise Problem("not-found", f"no problem type {slug!r}")
        p = PROBLEMS[slug]
        return {"type": f"/problems/{p.slug}", "status": p.status, "title": p.title, "description": p.description}
