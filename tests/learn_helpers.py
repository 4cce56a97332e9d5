"""Helpers for the learning tests: a simulated world posted as agents would post it."""

from __future__ import annotations

from typing import Any

from world_model.config import MASS, PRESENT, RADIUS, VX, VY, X, Y
from world_model.simulator import Rollouts


def as_observations(world: Rollouts, time_step: float, prefix: str, t0: float) -> list[dict[str, Any]]:
    """One observation per present body and step (entity `box<b>-body<k>`, event `<prefix>-<b>-<k>-<t>`),
    observed at t0 + t x time_step: the world's own grid, as the learner places it."""
    batch = []
    for b in range(world.frames.shape[0]):
        for t in range(world.frames.shape[1]):
            for k in range(world.frames.shape[2]):
                f = world.frames[b, t, k].tolist()
                if f[PRESENT] > 0.5:
                    batch.append({"event_id": f"{prefix}-{b}-{k}-{t}", "entity": f"box{b}-body{k}", "source": "cam",
                                  "observed_at": t0 + t * time_step,
                                  "fields": {"x": f[X], "y": f[Y], "vx": f[VX], "vy": f[VY],
                                             "radius": f[RADIUS], "mass": f[MASS]}})
    return batch
