"""Held-out test cases for surprise: normal windows and impossible events.

Every case is W context frames of ordinary physics followed by H observed
frames. In the impossible cases something the physics forbids happens at the
first observed frame: a body teleports, vanishes, gravity flips sign, or a
body passes through a wall. The model is always told the true (unflipped)
physics document.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .config import PRESENT, RADIUS, Config
from .simulator import generate, random_actions, random_worlds, rollout, sample_physics, sample_windows, step

Case = tuple[Tensor, Tensor, Tensor]  # frames (n, W+H, N, OBS), actions (n, H, N, 2), physics (n, 4)
KINDS = ("teleport", "vanish", "gravity_flip", "wall_pass")


def _pick_body(frames: Tensor, gen: torch.Generator) -> Tensor:
    """A random present body per world (bodies are packed at the front)."""
    count = frames[:, -1, :, PRESENT].sum(-1).long().clamp(min=1)
    return (torch.rand(frames.shape[0], generator=gen) * count).long()


def _context(cfg: Config, n: int, gen: torch.Generator, min_gravity: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    phys = sample_physics(n, cfg.sim.ranges, gen)
    if min_gravity > 0:
        phys[:, 0] = min_gravity + (cfg.sim.ranges.gravity[1] - min_gravity) * torch.rand(n, generator=gen)
    s0 = random_worlds(n, cfg.sim, gen)
    acts = random_actions(n, cfg.model.window - 1, cfg.sim, gen) * s0[:, None, :, PRESENT, None]
    return rollout(s0, phys, acts, cfg.sim.box), acts, phys


def _continue(ctx: Tensor, phys: Tensor, cfg: Config, horizon: int, gen: torch.Generator,
              first: Callable[[Tensor], Tensor] | None = None, walls: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Observed frames after the context; `first` replaces the first one."""
    acts = random_actions(ctx.shape[0], horizon, cfg.sim, gen) * ctx[:, -1:, :, PRESENT, None]
    s = ctx[:, -1]
    out = []
    for k in range(horizon):
        s = step(s, phys, acts[:, k], cfg.sim.box, walls)
        if k == 0 and first is not None:
            s = first(s)
        out.append(s)
    return torch.stack(out, 1), acts


def make_cases(cfg: Config, n: int, horizon: int, seed: int) -> dict[str, Case]:
    gen = torch.Generator().manual_seed(seed)
    w, box = cfg.model.window, cfg.sim.box
    cases: dict[str, Case] = {}
    held_out = generate(n, 40, cfg.sim, seed=seed + 17)
    cases["normal"] = sample_windows(held_out, w + horizon, n, gen)
    cases["normal"] = (cases["normal"][0], cases["normal"][1][:, w - 1:], cases["normal"][2])

    ctx, _, phys = _context(cfg, n, gen)
    body = _pick_body(ctx, gen)
    idx = torch.arange(n)

    def teleport(s: Tensor) -> Tensor:
        """Move one body to a random spot in the box at least 2 m away."""
        s = s.clone()
        r = s[idx, body, RADIUS, None, None]
        cand = r + (box - 2 * r) * torch.rand(n, 32, 2, generator=gen)
        far = (cand - s[idx, body, None, 0:2]).norm(dim=-1) >= 2.0
        s[idx, body, 0:2] = cand[idx, far.float().argmax(dim=1)]
        return s

    obs, acts = _continue(ctx, phys, cfg, horizon, gen, first=teleport)
    cases["teleport"] = (torch.cat([ctx, obs], 1), acts, phys)

    ctx, _, phys = _context(cfg, n, gen)
    body = _pick_body(ctx, gen)
    obs, acts = _continue(ctx, phys, cfg, horizon, gen)
    obs = obs.clone()
    obs[idx, :, body] = 0.0  # gone from the first observed frame on
    obs[idx, :, body, 5] = 1.0
    cases["vanish"] = (torch.cat([ctx, obs], 1), acts, phys)

    ctx, _, phys = _context(cfg, n, gen, min_gravity=5.0)  # a flip of g~0 is not observable
    flipped = phys.clone()
    flipped[:, 0] = -flipped[:, 0]
    obs, acts = _continue(ctx, flipped, cfg, horizon, gen)
    cases["gravity_flip"] = (torch.cat([ctx, obs], 1), acts, phys)

    near, ghost, phys = _wall_setups(cfg, n, horizon, gen)
    for name, walls in (("normal_near_wall", None), ("wall_pass", ghost)):
        g2 = torch.Generator().manual_seed(seed + 99)  # same impulses for the twin cases
        obs, acts = _continue(near, phys, cfg, horizon, g2, walls=walls)
        cases[name] = (torch.cat([near, obs], 1), acts, phys)
    return cases


def near_wall_normals(cfg: Config, n: int, horizon: int, seed: int) -> Case:
    """Plausible windows in which one body hits a side wall soon after the context: contact is
    where a model's error is largest, so a threshold calibrated without these flags them."""
    gen = torch.Generator().manual_seed(seed)
    near, _, phys = _wall_setups(cfg, n, horizon, gen)
    obs, acts = _continue(near, phys, cfg, horizon, gen)
    return torch.cat([near, obs], 1), acts, phys


def _wall_setups(cfg: Config, n: int, horizon: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Context windows with one body heading fast into a side wall it will
    reach within the observed steps. Returns the context, a walls mask that
    lets that body through, and physics."""
    w, box = cfg.model.window, cfg.sim.box
    phys = sample_physics(n, cfg.sim.ranges, gen)
    s0 = random_worlds(n, cfg.sim, gen)
    idx = torch.arange(n)
    body = _pick_body(s0[:, None], gen)
    dt = phys[:, 3]
    speed = 4.0 + 3.0 * torch.rand(n, generator=gen)
    right = torch.rand(n, generator=gen) < 0.5
    r = s0[idx, body, RADIUS]
    # Far enough that the context is ordinary, close enough to cross soon after.
    gap = speed * dt * (w - 1) + 0.05 + 0.3 * torch.rand(n, generator=gen)
    x = torch.where(right, box - r - gap, r + gap)
    s0[idx, body, 0] = x
    s0[idx, body, 2] = torch.where(right, speed, -speed)
    s0[idx, body, 3] = 0.0
    ctx = rollout(s0, phys, torch.zeros(n, w - 1, s0.shape[1], 2), box)
    walls = torch.ones(n, s0.shape[1], dtype=torch.bool)
    walls[idx, body] = False
    return ctx, walls, phys


def auroc(pos: Tensor, neg: Tensor) -> float:
    """Probability a random positive scores above a random negative (ties 1/2)."""
    pos, neg = pos.double(), neg.double()
    gt = (pos[:, None] > neg[None, :]).double().mean()
    eq = (pos[:, None] == neg[None, :]).double().mean()
    return float(gt + 0.5 * eq)
