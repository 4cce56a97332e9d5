"""Errors as RFC 9457 problem+json: one table of problem types, and one table
from exception class to problem type, mapped in one place.

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
from starlette.requests import ClientDisconnect

from service import errors as service
from service.errors import model, store

MEDIA_TYPE = "application/problem+json"


def etag(revision: int) -> str:
    """A revision as a strong entity tag: "12"."""
    return f'"{revision}"'


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
    ProblemType("value-too-deep", 422, "Value nested too deep",
                "A value to store nests arrays and objects more than `limit` levels deep; nothing was stored."),
    ProblemType("value-too-large", 422, "Value too large",
                "A value to store is more than `limit` bytes as compact JSON (non-ASCII text counts as its "
                "\\u escapes); nothing was stored."),
    ProblemType("future-revision", 422, "Revision not reached yet",
                "A read asked for a snapshot at a revision the store has not reached; `current_revision` is "
                "where it is now. Pass 0 (now) or a revision an earlier answer gave."),
    ProblemType("unavailable", 503, "Tier unavailable",
                "The CP tier has no quorum or no reachable member, or this region's Redis is unreachable; "
                "nothing was changed. Retry after Retry-After; a CP read can ask for ?consistency=serializable "
                "to accept a possibly stale answer."),
    ProblemType("request-timeout", 408, "Request Timeout",
                "The request head did not arrive whole within the node's header timeout, or its body within the "
                "body timeout after the head; the connection is closed."),
    ProblemType("header-too-large", 431, "Request Header Fields Too Large",
                "The request line and headers exceed the node's limit; the connection is closed."),
    ProblemType("too-many-connections", 503, "Service Unavailable",
                "The node holds as many connections as it is configured to; this one was closed as it opened. "
                "Retry after Retry-After."),
    ProblemType("storage-full", 507, "CP tier out of space",
                "etcd reached its space quota and raised its cluster-wide NOSPACE alarm. The one write that "
                "crossed the quota may have been applied (etcd applies a write that passed its admission check "
                "and reports the quota as it applies it): read the key before writing again. Every later CP "
                "write is refused whole until an operator compacts, defragments and disarms the alarm "
                "(README, \"Security\"); reads still answer."),
    ProblemType("replica-full", 503, "AP replica out of memory",
                "This region's Redis is at its maxmemory and refuses writes rather than evict acknowledged "
                "data; nothing of the refused write was applied (a batch over one script call names how many "
                "were). Reads still answer. Retry after Retry-After (posting the same event ids again is safe): "
                "memory comes back as event ids leave the dedup window and peers apply the replication "
                "stream, or when an operator raises maxmemory."),
    ProblemType("outcome-unknown", 504, "Write outcome unknown",
                "The write was sent but not answered; it may or may not have been applied. For a CP value, "
                "read the key before trying again: a blind retry can apply a write twice. For observations, "
                "posting the same event ids again is safe: any that were applied come back as duplicates."),
    ProblemType("unknown-world", 404, "Unknown world",
                "Nothing is stored for this world in the CP tier; create it with PUT /v1/worlds/{world} first."),
    ProblemType("batch-too-large", 413, "Batch too large", "A batch holds more observations than the node's limit."),
    ProblemType("clock-drift", 422, "Timestamp too far ahead",
                "observed_at is further ahead of this node's clock than the configured max drift."),
    ProblemType("invalid-token", 400, "Malformed causal token",
                "A causal token looks like r1:v2.7-1732170000000-0: the region, then partition-ms-seq for each "
                "partition the write touched. The older r1:1732170000000-0 is refused."),
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
    ProblemType("changes-trimmed", 410, "Changes log trimmed past the position",
                "A subscription resumed after a position (Last-Event-ID) the replica's changes log no longer "
                "holds every entry after: the log keeps about WORLDSTATE_CHANGES_MAXLEN entries. Read the "
                "entities again, then subscribe from now."),
    ProblemType("slow-consumer", 409, "Subscriber too far behind",
                "The subscriber's position (`position`) fell `lag` entries behind the replica's changes log, more "
                "than the `max_lag` allowed (WORLDSTATE_SUBSCRIBE_MAX_LAG); the stream ends with an event of this "
                "type rather than buffer. A subscription that starts that far behind counts only to `max_lag` + 1. "
                "Read the entities again, then subscribe from now."),
    ProblemType("unknown-entity", 404, "Unknown entity", "No observations of this entity on the replica answering."),
    ProblemType("entity-incomplete", 422, "Entity lacks state",
                "The world model needs numeric x, y, vx, vy for every entity in a query (radius and mass default)."),
    ProblemType("model-input", 422, "World model refused the query",
                "Out of what the model accepts: horizon over its max, physics outside its trained ranges, "
                "non-finite numbers, too many entities. `code` names the case."),
    ProblemType("edge-stale", 503, "Edge node too stale",
                "An edge node answers from its own copy, labelled with how stale it may be; it was last in step "
                "with the core `stale_ms` ago (absent: never yet), more than the `max_staleness_ms` allowed (its "
                "--max-staleness, or the request's ?max_staleness_ms=). Retry after Retry-After, accept more "
                "staleness, or ask the core."),
    ProblemType("not-on-edge", 404, "Not held by this edge node",
                "An edge node holds one world, and of it the entities whose ids start with its prefix; ask the core."),
    ProblemType("unauthorized", 401, "API key missing, unknown or revoked",
                "Send a key as `Authorization: Bearer wsk_...` (README, \"Security\"). A stream opened with a key "
                "that is then revoked ends with an `error` event of this type."),
    ProblemType("forbidden", 403, "API key lacks the scope",
                "The key is valid but its scopes or worlds do not cover this operation; `scope` names the one "
                "needed. Nothing was changed."),
    ProblemType("unsupported-media-type", 415, "Body must be JSON",
                "Request bodies are sent as Content-Type: application/json; nothing was read or changed."),
    ProblemType("host-not-allowed", 400, "Host not allowed",
                "The Host header names neither an IP address nor a name this node is configured to answer to "
                "(WORLDSTATE_ALLOWED_HOSTS); refused so a web page cannot reach a local node by DNS rebinding."),
    ProblemType("rate-limited", 429, "Over the key's rate quota",
                "The key has a rate quota for this kind of request (`quota`, `limit` per second) and is over it; "
                "nothing was changed. Retry after Retry-After; a batch larger than one second's worth is "
                "refused without Retry-After: split it."),
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


# Exception class -> problem type, looked up along the class's MRO (most specific
# first), as starlette's exception handler does: a subclass needs no entry of its own.
PROBLEM: dict[type[BaseException], str] = {
    # the stores
    store.UnknownWorld: "unknown-world",
    store.NotFound: "not-found",
    store.Conflict: "precondition-failed",
    store.Unavailable: "unavailable",
    store.OutcomeUnknown: "outcome-unknown",
    store.InvalidKey: "invalid-key",
    store.Compacted: "compacted",
    store.StorageFull: "storage-full",
    store.ReplicaFull: "replica-full",
    # The body stopped coming and the connection is gone (its body deadline passed, or the client
    # left): nobody reads this answer, but mapped, it is not logged as a crash once per connection.
    ClientDisconnect: "request-timeout",
    service.FutureRevision: "future-revision",
    # the service
    service.InvalidInput: "validation-error",
    service.ValueTooDeep: "value-too-deep",
    service.ValueTooLarge: "value-too-large",
    service.ClockDrift: "clock-drift",
    service.BatchTooLarge: "batch-too-large",
    service.InvalidToken: "invalid-token",
    service.TokenUnknown: "token-unknown",
    service.NotYetConsistent: "not-yet-consistent",
    service.EntityNotFound: "not-found",
    service.EntityMissing: "unknown-entity",
    service.ChangesTrimmed: "changes-trimmed",
    service.SlowConsumer: "slow-consumer",
    service.ActionsForUnknown: "unknown-entity",
    service.EntityIncomplete: "entity-incomplete",
    service.ManifestInvalid: "manifest-invalid",
    service.ModelUnavailable: "model-unavailable",
    service.QuotaExceeded: "rate-limited",
    service.EdgeStale: "edge-stale",
    service.NotOnEdge: "not-on-edge",
    # the world model
    model.UnknownEntity: "unknown-entity",
    model.InvalidInput: "model-input",
    model.Overloaded: "unavailable",
    model.BatcherClosed: "unavailable",
}
# The attributes of an error that its problem document carries as members.
MEMBERS: dict[type[BaseException], tuple[str, ...]] = {
    store.UnknownWorld: ("world",),
    store.Conflict: ("current_revision",),
    store.Compacted: ("compact_revision",),
    service.FutureRevision: ("current_revision",),
    service.InvalidInput: ("errors",),
    service.ValueTooDeep: ("limit",),
    service.ValueTooLarge: ("limit",),
    service.ClockDrift: ("index", "drift_ms", "max_drift_ms"),
    service.BatchTooLarge: ("limit",),
    service.TokenUnknown: ("region",),
    service.NotYetConsistent: ("token", "behind"),
    service.EntityMissing: ("entity",),
    service.EntityDeleted: ("deleted_hlc", "deleted_by"),
    service.ChangesTrimmed: ("after", "oldest"),
    service.SlowConsumer: ("position", "lag", "max_lag"),
    service.ActionsForUnknown: ("entities",),
    service.EntityIncomplete: ("entity", "missing"),
    service.QuotaExceeded: ("quota", "limit"),
    service.EdgeStale: ("stale_ms", "max_staleness_ms", "as_of_ms"),
    model.InvalidInput: ("code",),
}
# Seconds a client should wait before retrying what a busy or partitioned node refused.
RETRY_AFTER_S: dict[type[BaseException], float] = {model.Overloaded: 1.0, model.BatcherClosed: 1.0}


def _lookup(table: dict[type[BaseException], Any], exc: BaseException) -> Any:
    return next((table[c] for c in type(exc).__mro__ if c in table), None)


def problem_of(exc: BaseException) -> Problem:
    """The problem an error stands for; anything unmapped is `internal` and names only its class."""
    if isinstance(exc, Problem):
        return exc
    slug = _lookup(PROBLEM, exc)
    if slug is None:
        return Problem("internal", type(exc).__name__)
    extra = {name: getattr(exc, name) for name in _lookup(MEMBERS, exc) or ()}
    extra = {k: v for k, v in extra.items() if v is not None}
    headers = {}
    retry = getattr(exc, "retry_after_s", None) or _lookup(RETRY_AFTER_S, exc)
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    if isinstance(exc, store.Conflict) and exc.current_revision:
        headers["ETag"] = etag(exc.current_revision)
    detail = str(exc) if not isinstance(exc, store.UnknownWorld) else f"world {exc.world!r} does not exist"
    return Problem(slug, detail, headers=headers, **extra)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

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

    async def _mapped(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(problem_of(exc), request.url.path)

    # Every mapped class gets the handler: one registered for Exception alone would run
    # in Starlette's ServerErrorMiddleware, which logs and re-raises after answering.
    for exc_type in (*PROBLEM, Exception):
        app.add_exception_handler(exc_type, _mapped)

    @app.get("/problems/{slug}", include_in_schema=False)
    async def _describe(slug: str) -> dict[str, Any]:
        if slug not in PROBLEMS:
            raise Problem("not-found", f"no problem type {slug!r}")
        p = PROBLEMS[slug]
        return {"type": f"/problems/{p.slug}", "status": p.status, "title": p.title, "description": p.description}
