"""Fault injection for jepsen_like; mounted only when WORLDSTATE_FAULTS=1."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import node
from service.faults import SABOTAGES
from service.node import Node

router = APIRouter(prefix="/_faults", tags=["faults"])


class ClockOffset(BaseModel):
    offset_ms: int = Field(..., ge=-86_400_000, le=86_400_000)


@router.get("")
async def get_faults(n: Annotated[Node, Depends(node)]) -> dict[str, object]:
    return {"clock_offset_ms": n.clock_offset_ms, "sabotage": sorted(n.settings.sabotage),
            "known_sabotage": SABOTAGES, "hlc": n.hlc.last.to_string()}


@router.put("/clock")
async def set_clock(body: ClockOffset, n: Annotated[Node, Depends(node)]) -> dict[str, object]:
    """Skew this node's wall clock, as its HLC sees it, by `offset_ms`."""
    n.clock_offset_ms = body.offset_ms
    return {"clock_offset_ms": n.clock_offset_ms, "wall_ms": n.now_ms()}
