"""The OpenAPI document of a node: FastAPI's, plus what FastAPI cannot see.

FastAPI sees neither the GET of one param (a plain Starlette route), nor the bodies routes
read themselves (`api.body.json_body`), nor the problems `api.problems` maps errors to. The
document is FastAPI's, post-processed from tables: which problem types each operation can
answer (statuses and titles from `api.problems.PROBLEMS`), request and response examples
(api/openapi_examples.py), name patterns, links between operations, and the bearer scheme.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api import docs, openapi_examples
from api.problems import MEDIA_TYPE, PROBLEMS
from api.routes import params
from api.schemas import ObservationIn
from service.observation_input import MAX_OBSERVED_AT, PATTERNS

SECURITY_SCHEME = "bearerAuth"
PUBLIC = ("/healthz", "/readyz", "/metrics")  # with /docs and /openapi.json, which are not in the document

# -- which problems each operation can answer -----------------------------------------
EVERY = ("request-timeout", "header-too-large", "too-many-connections", "host-not-allowed", "payload-too-large")
V1 = ("unauthorized", "forbidden", "rate-limited", "validation-error", "unavailable")  # unavailable: keys not loaded
BODY = ("unsupported-media-type", "invalid-json")  # a body the route reads itself
CP_READ = ("invalid-key", "not-found", "unavailable")
CP_LIST = ("invalid-key", "unavailable", "compacted", "future-revision")
CP_WRITE = ("invalid-key", "invalid-precondition", "precondition-failed", "value-too-deep", "value-too-large",
            "unavailable", "outcome-unknown", "storage-full")
AP_READ = ("invalid-key", "not-found", "invalid-token", "token-unknown", "not-yet-consistent", "unavailable")
MODEL = ("unsupported-media-type", "invalid-key", "unknown-world", "unknown-entity", "entity-incomplete",
         "model-input", "model-unavailable", "unavailable")
PROBLEMS_OF: dict[str, tuple[str, ...]] = {
    "healthz": (), "readyz": (), "metrics": (),
    "get_param": CP_READ, "list_params": CP_LIST, "put_param": BODY + CP_WRITE, "delete_param": CP_WRITE + ("not-found",),
    "get_world": CP_READ, "put_world": BODY + CP_WRITE, "list_worlds": ("invalid-key", "unavailable"),
    "get_physics": CP_READ, "put_physics": BODY + CP_WRITE,
    "watch": CP_LIST,
    "post_observations": BODY + ("invalid-key", "unknown-world", "batch-too-large", "clock-drift", "replica-full",
                                 "unavailable", "outcome-unknown"),
    "get_entity": AP_READ, "list_entities": AP_READ,
    "delete_entity": ("invalid-key", "unknown-world", "replica-full", "unavailable", "outcome-unknown"),
    "stream_entities": ("invalid-key", "unknown-world", "unavailable"),
    "get_manifest": CP_READ, "put_manifest": BODY + CP_WRITE + ("manifest-invalid",),
    "current_model": (),
    "get_blob": ("not-found", "model-unavailable"),
    "get_positions": ("invalid-key", "unknown-world", "unavailable"),
    "predict": MODEL, "surprise": MODEL, "plan": MODEL,
    "create_key": BODY + ("unavailable", "outcome-unknown", "storage-full"),
    "list_keys": ("unavailable",),
    "revoke_key": ("not-found", "unavailable", "outcome-unknown", "storage-full"),
}
# An operation the table does not name yet (a route added later) gets its method's set.
BY_METHOD = {"get": CP_READ, "delete": CP_WRITE + ("not-found",), "put": BODY + CP_WRITE, "post": BODY + CP_WRITE}

# -- name patterns (the validators' own: tests/test_openapi.py compares them) ---------------
WORLD = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "maxLength": 64,
         "description": "a world name: [A-Za-z0-9][A-Za-z0-9._-]{0,63}"}
KEY = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}(/[A-Za-z0-9._-]{1,64})*$", "maxLength": 256,
       "description": "'/'-separated segments of [A-Za-z0-9._-]{1,64} (not . or ..), at most 256 characters, "
                      "e.g. physics/gravity"}
ENTITY = {"type": "string", "pattern": f"^{PATTERNS['entity']}$", "description": "an entity id"}
KEY_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "a key's id (not its token)"}
DIGEST = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "a model blob's sha256, as a manifest names it"}
PATH_PARAMS = {"world": WORLD, "key": KEY, "entity": ENTITY, "key_id": KEY_ID, "digest": DIGEST}

# -- links: what a stateful client may do next with what it just wrote -----------------
_WORLD_ARG = {"world": "$request.path.world"}
LINKS: dict[str, dict[str, dict[str, Any]]] = {
    "put_world": {"GetWorld": {"operationId": "get_world", "parameters": _WORLD_ARG},
                  "ListParams": {"operationId": "list_params", "parameters": _WORLD_ARG},
                  "ListEntities": {"operationId": "list_entities", "parameters": _WORLD_ARG},
                  "PutPhysics": {"operationId": "put_physics", "parameters": _WORLD_ARG},
                  "PostObservations": {"operationId": "post_observations", "parameters": _WORLD_ARG}},
    "put_param": {"GetParam": {"operationId": "get_param",
                               "parameters": {**_WORLD_ARG, "key": "$request.path.key"}},
                  "DeleteParam": {"operationId": "delete_param",
                                  "parameters": {**_WORLD_ARG, "key": "$request.path.key"}}},
    "put_physics": {"GetPhysics": {"operationId": "get_physics", "parameters": _WORLD_ARG}},
    "post_observations": {"ListEntities": {"operationId": "list_entities", "parameters": _WORLD_ARG},
                          "GetEntity": {"operationId": "get_entity",
                                        "parameters": {**_WORLD_ARG, "entity": "$request.body#/entity"}},
                          "Predict": {"operationId": "predict", "parameters": _WORLD_ARG},
                          "Surprise": {"operationId": "surprise", "parameters": _WORLD_ARG},
                          "Plan": {"operationId": "plan", "parameters": _WORLD_ARG}},
    "put_manifest": {"GetManifest": {"operationId": "get_manifest"}},
    "create_key": {"RevokeKey": {"operationId": "revoke_key", "parameters": {"key_id": "$response.body#/id"}}},
}

# Bodies routes read with `api.body.json_body`, which FastAPI cannot see (physics and observations
# declare theirs with `openapi_extra`).
_ANY_JSON = {"description": "any JSON value: at most 32 levels of arrays and objects, 1 MiB as compact JSON; "
                            "integers within 64 bits, no NaN or Infinity"}
REQUEST_BODIES: dict[str, dict[str, Any]] = {
    "put_param": {"required": True, "content": {"application/json": {"schema": _ANY_JSON}}},
    "put_world": {"required": False, "description": "the world's metadata; no body stores {}",
                  "content": {"application/json": {"schema": {"type": "object", **_ANY_JSON}}}},
    "put_manifest": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["hash", "version"],
        "description": "published only if this node holds a model blob with this sha256",
        "properties": {"hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "version": {"type": "integer"},
                       "config": {"type": "object"}, "metrics": {"type": "object"},
                       "physics_revision": {"type": ["integer", "null"], "minimum": 0}}}}}},
}

PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status"],
    "description": "RFC 9457 problem details; GET on `type` describes it. Problem types add members "
                   "(current_revision, errors, limit, ...).",
    "properties": {"type": {"type": "string", "example": "/problems/not-found"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "detail": {"type": "string"}, "instance": {"type": "string"}},
    "additionalProperties": True,
}


def install(app: FastAPI) -> None:
    """The document at /openapi.json, and /docs with its assets served by the node."""
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    docs.install(app)


def operation_id(route: APIRoute) -> str:
    """The endpoint's function name (FastAPI's default appends path and method)."""
    return route.name


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["paths"].setdefault(params.GET_PATH.replace(":path", ""), {})["get"] = copy.deepcopy(params.GET_OPENAPI)
        app.openapi_schema = complete(schema)
    return app.openapi_schema


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Everything FastAPI leaves out, added to its document in place."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    # The observations body refers to ObservationIn for its array form: the schema must be there.
    obs = ObservationIn.model_json_schema(ref_template="#/components/schemas/{model}")
    obs["properties"]["observed_at"]["anyOf"][0]["maximum"] = MAX_OBSERVED_AT
    components["schemas"]["ObservationIn"] = obs
    components["securitySchemes"] = {SECURITY_SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": "An API key (`worldstate keys create`; `worldstate up` prints the admin key at first start)."}}
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            _operation(path, method, op["operationId"], op)
    if "/v1/worlds/{world}/observations" in schema["paths"]:
        _observations_body(schema)
    # FastAPI's validation error schemas describe a body this API never sends.
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused not in str(schema["paths"]):
            components["schemas"].pop(unused, None)
    return schema


def _observations_body(schema: dict[str, Any]) -> None:
    op = schema["paths"]["/v1/worlds/{world}/observations"]["post"]
    ref = {"$ref": "#/components/schemas/ObservationIn"}
    op["requestBody"]["content"]["application/json"]["schema"] = {
        "oneOf": [ref, {"type": "array", "items": ref, "minItems": 1}]}


def _operation(path: str, method: str, name: str, op: dict[str, Any]) -> None:
    public = path in PUBLIC
    op["security"] = [] if public else [{SECURITY_SCHEME: []}]
    for p in op.get("parameters", []):
        if p.get("in") == "path" and p["name"] in PATH_PARAMS:
            p["schema"] = {**PATH_PARAMS[p["name"]], **{k: v for k, v in p["schema"].items() if k == "title"}}
    if name in REQUEST_BODIES and "requestBody" not in op:
        op["requestBody"] = copy.deepcopy(REQUEST_BODIES[name])
    responses = op.setdefault("responses", {})
    if name in ("put_param", "put_world", "put_physics"):  # 201 when the write created the key
        responses["201"] = {**copy.deepcopy(responses["200"]), "description": "Created"}
    slugs = EVERY + (() if public else V1) + PROBLEMS_OF.get(name, BY_METHOD.get(method, ()))
    # FastAPI's own 422 (HTTPValidationError, application/json) is replaced by the problem.
    responses.pop("422", None)
    by_status = _by_status(slugs)
    if "{" in path:  # a name with a character no route takes (a newline) matches no route at all
        by_status.setdefault("404", []).append(("http-error", "Not Found: no route takes this path"))
    for status, members in sorted(by_status.items()):
        described = responses.setdefault(status, {"description": ""})
        described["description"] = "; ".join(f"{s}: {t}" for s, t in members)
        described.setdefault("content", {})[MEDIA_TYPE] = {
            "schema": {"$ref": "#/components/schemas/Problem"},
            "examples": {s: {"summary": t, "value": {"type": f"/problems/{s}", "title": t, "status": int(status)}}
                         for s, t in members}}
    if name in ("watch", "stream_entities"):
        responses["200"]["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    openapi_examples.add(name, op)
    if name in LINKS:
        for status in ("200", "201", "202"):
            if status in responses:
                responses[status]["links"] = LINKS[name]
    if name == "readyz":
        responses["503"]["description"] = "a tier cannot serve its guarantee (the body says which); " + \
            responses["503"]["description"]
        responses["503"]["content"]["application/json"] = {"schema": {"type": "object"}}


def _by_status(slugs: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for slug in dict.fromkeys(slugs):
        p = PROBLEMS[slug]
        out.setdefault(str(p.status), []).append((slug, p.title))
    return dict(sorted(out.items()))
