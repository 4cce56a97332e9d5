"""A vectorised 2-D rigid-disc world, batched over many worlds at once.

State is one tensor `(B, N, OBS_DIM)` per frame (see config.OBS_DIM); padding
bodies have present == 0 and never move or collide. Physics is `(B, 4)`:
gravity, restitution, drag, time step, so every world in a batch can have its
own constants. The simulator is the training-data generator and the oracle
for evaluation; the model never calls it at inference time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import MASS, OBS_DIM, PHYSICS_FIELDS, PRESENT, RADIUS, DataConfig, Physics, PhysicsRanges, SimConfig


@dataclass
class Rollouts:
    """frames (R, T+1, N, OBS_DIM), actions (R, T, N, 2), physics (R, 4)."""

    frames: Tensor
    actions: Tensor
    physics: Tensor

    def to(self, device: torch.device | str) -> "Rollouts":
        return Rollouts(self.frames.to(device), self.actions.to(device), self.physics.to(device))


def physics_tensor(p: Physics | list[Physics], device: torch.device | str = "cpu") -> Tensor:
    ps = [p] if isinstance(p, Physics) else p
    return torch.tensor([q.as_list() for q in ps], dtype=torch.float32, device=device)


def sample_physics(n: int, ranges: PhysicsRanges, gen: torch.Generator) -> Tensor:
    cols = []
    for name in PHYSICS_FIELDS:
        lo, hi = getattr(ranges, name)
        cols.append(lo + (hi - lo) * torch.rand(n, generator=gen))
    return torch.stack(cols, dim=1)


def random_worlds(n: int, cfg: SimConfig, gen: torch.Generator) -> Tensor:
    """(n, max_bodies, OBS_DIM) initial frames with 1..max_bodies bodies that
    start without overlapping (rejection sampling, vectorised over worlds)."""
    nb = cfg.max_bodies
    state = torch.zeros(n, nb, OBS_DIM)
    counts = torch.randint(cfg.min_bodies, nb + 1, (n,), generator=gen)
    present = (torch.arange(nb)[None, :] < counts[:, None]).float()
    radius = cfg.radius[0] + (cfg.radius[1] - cfg.radius[0]) * torch.rand(n, nb, generator=gen)
    mass = cfg.mass[0] + (cfg.mass[1] - cfg.mass[0]) * torch.rand(n, nb, generator=gen)
    tries = 24
    pos = torch.zeros(n, nb, 2)
    for i in range(nb):
        lo, hi = radius[:, i, None, None], cfg.box - radius[:, i, None, None]
        cand = lo + (hi - lo) * torch.rand(n, tries, 2, generator=gen)  # (n, tries, 2)
        if i == 0:
            pos[:, 0] = cand[:, 0]
            continue
        d = torch.linalg.norm(cand[:, :, None, :] - pos[:, None, :i, :], dim=-1)  # (n, tries, i)
        clear = (d > radius[:, None, i:i + 1] + radius[:, None, :i] + 0.05) | (present[:, None, :i] == 0)
        ok = clear.all(dim=-1)  # (n, tries)
        # First clear candidate; falls back to candidate 0 (collisions sort it out).
        first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), torch.zeros(n, dtype=torch.long))
        pos[:, i] = cand[torch.arange(n), first]
    vel = cfg.speed * (2 * torch.rand(n, nb, 2, generator=gen) - 1)
    if cfg.rest_prob > 0:
        rest = torch.rand(n, nb, generator=gen) < cfg.rest_prob
        still = rest & (torch.rand(n, nb, generator=gen) < 0.5)  # half of them sliding along it
        pos[..., 1] = torch.where(rest, radius, pos[..., 1])
        vel[..., 1] = torch.where(rest, 0.0, vel[..., 1])
        vel[..., 0] = torch.where(still, 0.0, vel[..., 0])
    state[..., 0:2] = pos
    state[..., 2:4] = vel
    state[..., RADIUS] = radius
    state[..., MASS] = mass
    state[..., PRESENT] = present
    state = state * present[..., None]
    state[..., MASS] = torch.where(present > 0, mass, 1.0)  # padding keeps mass 1: no 0-division
    return state


def random_actions(n: int, steps: int, cfg: SimConfig, gen: torch.Generator) -> Tensor:
    """Sparse random impulses (n, steps, max_bodies, 2)."""
    hit = (torch.rand(n, steps, cfg.max_bodies, 1, generator=gen) < cfg.action_prob).float()
    return hit * cfg.action_max * (2 * torch.rand(n, steps, cfg.max_bodies, 2, generator=gen) - 1)


def step(state: Tensor, physics: Tensor, action: Tensor | None, box: float,
         walls: Tensor | None = None, accel: Tensor | None = None) -> Tensor:
    """Advance every world by one time step.

    Order: impulse, gravity, drag (semi-implicit Euler), move, bounce off
    walls, then resolve body pairs one after another. Pairs are resolved
    sequentially (Gauss-Seidel) rather than all at once so that each contact
    conserves momentum and, at restitution 1, kinetic energy exactly.
    `walls` (B, N) bool lets a body ignore the walls (the "passes through a
    wall" impossible event of the evaluation). `accel` (B, 2) is a steady
    external acceleration, m/s^2, that the physics document does not name (a
    wind): the learner's benchmark makes worlds the model has not seen with it.
    """
    g, e, drag, dt = (physics[:, i, None] for i in range(4))  # each (B, 1)
    pres = state[..., PRESENT]
    live = pres > 0
    r, m = state[..., RADIUS], state[..., MASS]
    vel = state[..., 2:4].clone()
    if action is not None:
        vel = vel + action / m[..., None] * pres[..., None]
    vel[..., 1] = vel[..., 1] - g * dt
    if accel is not None:
        vel = vel + accel[:, None, :] * dt[..., None]
    vel = vel * torch.exp(-drag * dt)[..., None]
    pos = state[..., 0:2] + vel * dt[..., None]

    wall_on = live if walls is None else live & walls
    for ax in range(2):
        p, v = pos[..., ax], vel[..., ax]
        lo, hi = r, box - r
        below, above = wall_on & (p < lo), wall_on & (p > hi)
        # Reflect the overshoot scaled by restitution, then keep inside the box.
        p = torch.where(below, lo + e * (lo - p), p)
        p = torch.where(above, hi - e * (p - hi), p)
        p = torch.where(wall_on, torch.minimum(torch.maximum(p, lo), hi), p)
        v = torch.where(below & (v < 0), -e * v, v)
        v = torch.where(above & (v > 0), -e * v, v)
        pos[..., ax], vel[..., ax] = p, v

    n = state.shape[1]
    inv_m = 1.0 / m
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[:, j] - pos[:, i]
            dist = torch.linalg.norm(d, dim=-1).clamp(min=1e-6)
            normal = d / dist[:, None]
            overlap = r[:, i] + r[:, j] - dist
            contact = live[:, i] & live[:, j] & (overlap > 0)
            vrel = ((vel[:, j] - vel[:, i]) * normal).sum(-1)
            w = inv_m[:, i] + inv_m[:, j]
            imp = torch.where(contact & (vrel < 0), -(1 + e[:, 0]) * vrel / w, torch.zeros_like(vrel))
            vel[:, i] = vel[:, i] - (imp * inv_m[:, i])[:, None] * normal
            vel[:, j] = vel[:, j] + (imp * inv_m[:, j])[:, None] * normal
            push = torch.where(contact, overlap / w, torch.zeros_like(overlap))[:, None] * normal
            pos[:, i] = pos[:, i] - inv_m[:, i, None] * push
            pos[:, j] = pos[:, j] + inv_m[:, j, None] * push

    # Separating two bodies may push one past a wall; walls win.
    r2 = r[..., None]
    pos = torch.where(wall_on[..., None], torch.minimum(torch.maximum(pos, r2), box - r2), pos)
    out = state.clone()
    out[..., 0:2] = torch.where(live[..., None], pos, state[..., 0:2])
    out[..., 2:4] = torch.where(live[..., None], vel, state[..., 2:4])
    return out


def rollout(state: Tensor, physics: Tensor, actions: Tensor, box: float,
            walls: Tensor | None = None, accel: Tensor | None = None) -> Tensor:
    """Frames (B, T+1, N, OBS_DIM) from an initial state and actions (B, T, N, 2)."""
    frames = [state]
    for t in range(actions.shape[1]):
        frames.append(step(frames[-1], physics, actions[:, t], box, walls, accel))
    return torch.stack(frames, dim=1)


def generate(n: int, steps: int, cfg: SimConfig, seed: int, chunk: int = 1024) -> Rollouts:
    """Seeded, reproducible rollouts with varied constants, body counts and
    random impulses. Chunked so memory stays flat for large n."""
    gen = torch.Generator().manual_seed(seed)
    frames, acts, phys = [], [], []
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        p = sample_physics(k, cfg.ranges, gen)
        s0 = random_worlds(k, cfg, gen)
        a = random_actions(k, steps, cfg, gen) * s0[:, None, :, PRESENT, None]
        frames.append(rollout(s0, p, a, cfg.box))
        acts.append(a)
        phys.append(p)
    return Rollouts(torch.cat(frames), torch.cat(acts), torch.cat(phys))


def datasets(sim: SimConfig, data: DataConfig) -> tuple[Rollouts, Rollouts]:
    """Train and validation rollouts; the validation seed is disjoint."""
    train = generate(data.train_rollouts, data.rollout_len, sim, seed=data.seed * 2 + 1)
    val = generate(data.val_rollouts, data.rollout_len, sim, seed=data.seed * 2 + 2)
    return train, val


def sample_windows(data: Rollouts, length: int, batch: int, gen: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random sub-trajectories: frames (B, length, N, OBS), actions (B, length-1, N, 2), physics (B, 4)."""
    r, t = data.frames.shape[:2]
    ri = torch.randint(0, r, (batch,), generator=gen)
    ti = torch.randint(0, t - length + 1, (batch,), generator=gen)
    ar = torch.arange(length)
    ri, ti, ar = ri.to(data.frames.device), ti.to(data.frames.device), ar.to(data.frames.device)
    frames = data.frames[ri[:, None], ti[:, None] + ar]
    actions = data.actions[ri[:, None], ti[:, None] + ar[:-1]]
    return frames, actions, data.physics[ri]


def kinetic_energy(state: Tensor) -> Tensor:
    """(B,) total kinetic energy of the present bodies."""
    v2 = (state[..., 2:4] ** 2).sum(-1)
    return 0.5 * (state[..., MASS] * v2 * state[..., PRESENT]).sum(-1)


def momentum(state: Tensor) -> Tensor:
    """(B, 2) total momentum of the present bodies."""
    return (state[..., MASS, None] * state[..., 2:4] * state[..., PRESENT, None]).sum(1)
