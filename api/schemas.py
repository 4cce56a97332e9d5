"""Request and response documents of the HTTP API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from consistency.cp_store import Entry


class Physics(BaseModel):
    """A world's physics constants, stored as one CP value so no reader sees half an update."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    gravity: float = Field(..., ge=-50.0, le=50.0, description="downward acceleration, m/s^2 (negative: upward)")
    restitution: float = Field(..., ge=0.0, le=1.0, description="bounce: 0 fully inelastic, 1 elastic")
    drag: float = Field(..., ge=0.0, le=10.0, description="linear drag coefficient, 1/s")
    time_step: float = Field(..., gt=0.0, le=0.1, description="simulation step, s")


def entry_document(world: str, key: str, entry: Entry) -> dict[str, Any]:
    return {
        "world": world,
        "key": key,
        "value": entry.value,
        "revision": entry.mod_revision,
        "create_revision": entry.create_revision,
        "version": entry.version,
        "store_revision": entry.revision,
        "consistency": entry.consistency,
    }


def read_headers(entry: Entry) -> dict[str, str]:
    return {
        "ETag": f'"{entry.mod_revision}"',
        "X-Worldstate-Revision": str(entry.revision),
        "X-Worldstate-Consistency": entry.consistency,
    }
