"""`GET /metrics`: this node's metrics in the Prometheus text format (service/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from api.deps import NodeDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(n: NodeDep) -> PlainTextResponse:
    """Request durations, observations, replication per peer, the serving model. Public, like
    /healthz: a Prometheus scraper carries no API key."""
    await n.metrics.refresh()
    return PlainTextResponse(generate_latest(n.metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
