"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import NodeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up; says nothing about its backends."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(n: NodeDep) -> JSONResponse:
    """Each tier's state; 503 while any tier cannot serve its guarantee."""
    tiers = await n.readiness()
    # The model is reported, not required: a node without one still serves both tiers. Keys are
    # required: until they are loaded every request with one answers 503.
    ready = all(tiers[t].get("state") == "ok" for t in ("cp", "ap")) and tiers["keys"]["state"] in ("ok", "off")
    return JSONResponse({"status": "ready" if ready else "degraded", "region": n.settings.region,
                         "node": n.settings.node_id, "tiers": tiers}, status_code=200 if ready else 503)
