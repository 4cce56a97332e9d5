"""Fault injection for jepsen_like; mounted only when WORLDSTATE_FAULTS=1."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import NodeDep

router = APIRouter(prefix="/_faults", tags=["faults"])


class ClockOffset(BaseModel):
    offset_ms: int = Field(..., ge=-86_400_000, le=86_400_000)


@router.get("")
async def get_faults(n: NodeDep) -> dict[str, object]:
    return n.faults()


@router.put("/clock")
async def set_clock(body: ClockOffset, n: NodeDep) -> dict[str, object]:
    """Skew this node's wall clock, as its HLC sees it, by `offset_ms`."""
    n.skew_clock(body.offset_ms)
    return {"clock_offset_ms": n.clock_offset_ms, "wall_ms": n.now_ms()}
