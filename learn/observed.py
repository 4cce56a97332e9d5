"""A simulated world as agents would post it: one observation per present body and step.

The inverse of learn/trajectories.py: bench/learn_posted.py and the learning tests post a world
the simulator made through the API, and the learner reads it back from the log.
"""

from __future__ import annotations

from typing import Any

from world_model.config import MASS, PRESENT, RADIUS, VX, VY, X, Y
from world_model.simulator import Rollouts


EPISODE_GAP = 8  # steps between one episode's last observation and the next one's first


def as_observations(world: Rollouts, time_step: float, prefix: str, t0: float, episodes: bool = False
                    ) -> list[dict[str, Any]]:
    """One observation per present body and step (entity `box<b>-body<k>`, event `<prefix>-<b>-<k>-<t>`),
    observed at t0 + t x time_step: the world's own grid, as the learner places it. With `episodes`,
    the boxes are one scene observed one after another (a lab that resets its scene), box b from
    t0 + b x (T + EPISODE_GAP) x time_step; without, every box at once (bodies of different boxes
    then share the world's space without ever touching)."""
    batch = []
    steps = world.frames.shape[1]
    for b in range(world.frames.shape[0]):
        start = t0 + (b * (steps + EPISODE_GAP) * time_step if episodes else 0.0)
        for t in range(steps):
            for k in range(world.frames.shape[2]):
                f = world.frames[b, t, k].tolist()
                if f[PRESENT] > 0.5:
                    batch.append({"event_id": f"{prefix}-{b}-{k}-{t}", "entity": f"box{b}-body{k}", "source": "cam",
                                  "observed_at": start + t * time_step,
                                  "fields": {"x": f[X], "y": f[Y], "vx": f[VX], "vy": f[VY],
                                             "radius": f[RADIUS], "mass": f[MASS]}})
    return batch
