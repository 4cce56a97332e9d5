"""The log's one-entity samples put back together into scenes: the bodies that met, in one sample.

The learner cuts each entity's trajectory on its own (learn/trajectories.py), so a sample shows one
body, and a collision with a body the sample does not show is an error no model can learn from it
(measured with bench/learn_posted.py: on the lossy-bounce world, learning from one-body samples
moved the error at 10 steps by 0.93x; the simulator's whole boxes, 0.15x). Samples start on one
absolute grid (every `stride` steps since the epoch), so the entities of a world observed over the
same steps have samples with the same first instant. Among those, two bodies that come within
`REACH` of touching during the window belong together: a scene is a connected set of them (a
chain of contacts), at most `max_bodies` bodies (the model's own limit; a larger set is cut in
name order, and the contacts across the cut are lost). A body that meets no one stays alone.

Held-out splitting keeps each group of entities that ever shared a scene on one side, so no
body's trajectory is learned from and measured on; when that leaves fewer than MIN_GROUPS groups
(a small world whose bodies all meet), each scene is its own group.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from world_model.config import MASS, OBS_DIM, RADIUS, X, Y
from world_model.simulator import Rollouts

REACH = 0.1  # m beyond touching that counts as meeting (a contact between frames is missed otherwise)
MIN_GROUPS = 4


class _Union:
    """Disjoint sets over names or indices (one kind per instance); a set's root is its least member."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, a: Any) -> Any:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _met(frames: torch.Tensor) -> torch.Tensor:
    """(T, K, OBS) one window's bodies -> (K, K) bool: the two came within REACH of touching."""
    pos, r = frames[..., X:Y + 1], frames[..., RADIUS]
    gap = (pos[:, :, None] - pos[:, None, :]).norm(dim=-1) - r[:, :, None] - r[:, None, :]
    return (gap < REACH).any(0)


def scenes(data: Rollouts, entities: list[str], starts: list[int], max_bodies: int
           ) -> tuple[Rollouts, list[str]]:
    """One-body samples (R, T, 1, OBS) with their entities and first instants -> scenes
    (S, T, max_bodies, OBS), padded as the simulator pads, and each scene's split group."""
    by_window: dict[tuple[int, tuple[float, ...]], list[int]] = defaultdict(list)
    for i, start in enumerate(starts):
        by_window[(start, tuple(data.physics[i].tolist()))].append(i)
    members: list[list[int]] = []
    for _, idx in sorted(by_window.items()):
        idx = sorted(idx, key=lambda i: entities[i])
        met = _met(data.frames[idx, :, 0].transpose(0, 1))
        parts = _Union()
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                if bool(met[a, b]):
                    parts.join(a, b)
        comps: dict[int, list[int]] = defaultdict(list)
        for a in range(len(idx)):
            comps[parts.find(a)].append(idx[a])
        for comp in sorted(comps.values(), key=lambda c: entities[c[0]]):
            members += [comp[k:k + max_bodies] for k in range(0, len(comp), max_bodies)]
    r, t = len(members), data.frames.shape[1]
    frames = torch.zeros(r, t, max_bodies, OBS_DIM, dtype=data.frames.dtype)
    frames[..., MASS] = 1.0
    for s, comp in enumerate(members):
        frames[s, :, :len(comp)] = data.frames[comp, :, 0].transpose(0, 1)
    physics = torch.stack([data.physics[c[0]] for c in members]) if members else torch.zeros(0, 4)
    out = Rollouts(frames, torch.zeros(r, t - 1, max_bodies, 2, dtype=data.actions.dtype), physics)
    return out, _groups(members, entities, starts)


def _groups(members: list[list[int]], entities: list[str], starts: list[int]) -> list[str]:
    together = _Union()
    for comp in members:
        for i in comp:
            together.join(entities[comp[0]], entities[i])
    groups = [together.find(entities[comp[0]]) for comp in members]
    if len(set(groups)) >= MIN_GROUPS or len(members) < MIN_GROUPS:
        return groups
    return [f"{starts[comp[0]]}:{entities[comp[0]]}" for comp in members]
