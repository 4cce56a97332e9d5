"""API keys over HTTP: create (the token is shown once), list, revoke. Admin only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.body import json_body
from api.deps import NodeDep
from api.problems import Problem

router = APIRouter(prefix="/v1/keys", tags=["keys"])

KEY_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["name", "scopes", "worlds"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$"},
        "scopes": {"type": "array", "minItems": 1,
                   "items": {"enum": ["read", "observe", "predict", "params:write", "admin"]}},
        "worlds": {"type": "array", "minItems": 1, "items": {"type": "string"},
                   "description": "world names, or [\"*\"] for every world"},
        "quotas": {"type": "object", "additionalProperties": False, "properties": {
            "observations_per_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6},
            "queries_per_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6}}},
    }},
    "example": {"name": "robot-7", "scopes": ["read", "observe"], "worlds": ["lab"],
                "quotas": {"observations_per_s": 500}}}}}}


@router.post("", status_code=201, openapi_extra=KEY_BODY)
async def create_key(request: Request, n: NodeDep) -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"name", "scopes", "worlds", "quotas"}:
        raise Problem("validation-error", "the body is an object of name, scopes, worlds and optional quotas",
                      errors=[{"loc": ["body"], "msg": "an object of name, scopes, worlds, quotas",
                               "type": "value_error"}])
    key, token = await n.keys.create(body.get("name"), body.get("scopes"), body.get("worlds"),  # type: ignore[arg-type]
                                     body.get("quotas"))
    return JSONResponse({**key.public(), "token": token}, status_code=201)


@router.get("")
async def list_keys(n: NodeDep) -> dict[str, Any]:
    return {"keys": [k.public() for k in sorted(await n.keys.list(), key=lambda k: k.created_at_ms)]}


@router.delete("/{key_id}")
async def revoke_key(key_id: str, n: NodeDep) -> dict[str, Any]:
    revision = await n.keys.revoke(key_id)
    return {"id": key_id, "revoked": True, "store_revision": revision}
