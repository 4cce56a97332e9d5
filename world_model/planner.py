"""Planning: push one body into a goal region.

CEM (and random shooting, its one-round special case) searches sequences of
impulses on the controlled body. Candidates are scored by a dynamics model:
`LatentDynamics` rolls them through the JEPA predictor in latent space and
reads the body's position from the latent; `SimDynamics` uses the true
simulator (the upper bound). Everything is batched over E independent
problems and P candidates, so evaluation runs many episodes at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from .config import Config
from .errors import Cancelled
from .model import JEPA, Encoded
from .simulator import step as sim_step


@dataclass
class PlanResult:
    actions: Tensor  # (E, H, 2) impulses on the controlled body
    cost: Tensor  # (E,) predicted final distance to the goal centre
    path: Tensor  # (E, H, 2) predicted positions of the body
    reaches: Tensor | None = None  # (E,) bool: inside the goal even if the prediction is off by its usual error


class Dynamics(Protocol):
    def prepare(self, window: Tensor, physics: Tensor, body: Tensor,
                frame_visible: Tensor | None = None) -> object: ...

    def positions(self, ctx: object, actions: Tensor) -> Tensor: ...


def _body_actions(actions: Tensor, body: Tensor, n: int) -> Tensor:
    """(E, P, H, 2) impulses on one body -> (E*P, H, N, 2) for the whole world."""
    e, p, h, _ = actions.shape
    full = actions.new_zeros(e, p, h, n, 2)
    # Two advanced indices around slices: the indexed view is (E, P, H, 2).
    full[torch.arange(e, device=actions.device), :, :, body.to(actions.device)] = actions
    return full.view(e * p, h, n, 2)


class LatentDynamics:
    """Runs on the JEPA's device whatever device the candidates come from."""

    def __init__(self, jepa: JEPA):
        self.jepa = jepa
        self.device = next(jepa.parameters()).device

    @torch.no_grad()
    def prepare(self, window: Tensor, physics: Tensor, body: Tensor,
                frame_visible: Tensor | None = None) -> tuple[Encoded, Tensor, Tensor]:
        d = self.device
        vis = None if frame_visible is None else frame_visible.to(d)
        physics = physics.to(d)
        return self.jepa.encode(window.to(d), physics, vis), physics, body.to(d)

    @torch.no_grad()
    def positions(self, ctx: tuple[Encoded, Tensor, Tensor], actions: Tensor) -> Tensor:
        enc, physics, body = ctx
        e, p = actions.shape[:2]
        out_device, actions = actions.device, actions.to(self.device)

        def rep(t: Tensor) -> Tensor:
            return t.repeat_interleave(p, 0)

        big = Encoded(*map(rep, enc))
        z = self.jepa.rollout(big, rep(physics), _body_actions(actions, body, enc.z.shape[1]), features=False)
        zb = z.view(e, p, *z.shape[1:])[torch.arange(e, device=z.device), :, :, body]  # (E, P, H, D)
        return self.jepa.read_state(zb)[..., 0:2].to(out_device)


class SimDynamics:
    def __init__(self, cfg: Config):
        self.box = cfg.sim.box

    def prepare(self, window: Tensor, physics: Tensor, body: Tensor,
                frame_visible: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        return window[:, -1], physics, body

    @torch.no_grad()
    def positions(self, ctx: tuple[Tensor, Tensor, Tensor], actions: Tensor) -> Tensor:
        state, physics, body = ctx
        e, p, h, _ = actions.shape
        s = state.repeat_interleave(p, 0)
        ph = physics.repeat_interleave(p, 0)
        full = _body_actions(actions, body, state.shape[1])
        out = []
        for k in range(h):
            s = sim_step(s, ph, full[:, k], self.box)
            out.append(s[..., 0:2])
        pos = torch.stack(out, 1).view(e, p, h, -1, 2)
        return pos[torch.arange(e, device=pos.device), :, :, body.to(pos.device)]


def goal_cost(path: Tensor, goal: Tensor) -> Tensor:
    """Distance of the final position to the goal centre: (E, P, H, 2), (E, 3) -> (E, P)."""
    return (path[:, :, -1] - goal[:, None, 0:2]).norm(dim=-1)


def aim(state: Tensor, body: Tensor, physics: Tensor, goal: Tensor, horizon: int, action_max: float) -> Tensor:
    """A first guess for CEM's mean, (E, H, 2): the constant push that would carry the body from
    where it is to the goal in `horizon` steps if nothing but gravity acted, plus the impulse that
    cancels gravity each step. Without it, CEM's zero-mean start rarely finds how to lift a body
    off the floor and hold it at a goal in the air within a few hundred candidates."""
    e = state.shape[0]
    idx = torch.arange(e, device=state.device)
    p, v, m = state[idx, body, 0:2], state[idx, body, 2:4], state[idx, body, 5]
    g, dt = physics[:, 0], physics[:, 3]
    t = horizon * dt
    accel = 2 * (goal[:, 0:2] - p - v * t[:, None]) / (t[:, None] ** 2)
    accel = accel + torch.stack([torch.zeros_like(g), g], -1)
    push = (accel * (m * dt)[:, None]).clamp(-action_max, action_max)
    return push[:, None, :].expand(e, horizon, 2).contiguous()


@torch.no_grad()
def cem(dyn: Dynamics, ctx: object, goal: Tensor, horizon: int, budget: int, action_max: float,
        gen: torch.Generator, iterations: int = 4, elite_frac: float = 0.125,
        uniform: bool = False, mean: Tensor | None = None,
        cancelled: Callable[[], bool] | None = None) -> PlanResult:
    """Cross-entropy method over (E, H, 2) impulse sequences; `budget` is the
    number of candidate rollouts per problem, `mean` the first guess (zeros if
    None). With iterations=1 and uniform sampling this is random shooting."""
    e = goal.shape[0]
    device = goal.device
    pop = max(budget // iterations, 2)
    n_elite = max(int(pop * elite_frac), 1)
    mean = torch.zeros(e, horizon, 2, device=device) if mean is None else mean.to(device)
    std = torch.full((e, horizon, 2), action_max / 2, device=device)
    best_a = torch.zeros(e, horizon, 2, device=device)
    best_c = torch.full((e,), float("inf"), device=device)
    best_p = torch.zeros(e, horizon, 2, device=device)
    for _ in range(iterations):
        if cancelled is not None and cancelled():
            raise Cancelled("the plan's caller gave up")
        if uniform:
            noise = 2 * torch.rand(e, pop, horizon, 2, generator=gen) - 1
            cand = (noise.to(device) * action_max)
        else:
            noise = torch.randn(e, pop, horizon, 2, generator=gen).to(device)
            cand = (mean[:, None] + std[:, None] * noise).clamp(-action_max, action_max)
            cand[:, 0] = mean  # keep the current mean as a candidate
        path = dyn.positions(ctx, cand)
        cost = goal_cost(path, goal)
        c_min, i_min = cost.min(dim=1)
        better = c_min < best_c
        idx = torch.arange(e, device=device)
        best_c = torch.where(better, c_min, best_c)
        best_a = torch.where(better[:, None, None], cand[idx, i_min], best_a)
        best_p = torch.where(better[:, None, None], path[idx, i_min], best_p)
        elite = cand[idx[:, None], cost.topk(n_elite, dim=1, largest=False).indices]  # (E, k, H, 2)
        mean = elite.mean(1)
        std = elite.std(1).clamp(min=0.05 * action_max) if n_elite > 1 else std * 0.5
    return PlanResult(best_a, best_c, best_p)


@torch.no_grad()
def run_episodes(dyn: Dynamics, start: Tensor, physics: Tensor, body: Tensor, goal: Tensor, cfg: Config,
                 steps: int = 20, replan_every: int = 5, budget: int = 256, method: str = "cem",
                 seed: int = 0) -> Tensor:
    """Model-predictive control in the true simulator: plan with `dyn`, apply
    the first `replan_every` impulses, observe, re-plan over the remaining
    steps. Returns the final distance to the goal centre of each episode (E,)."""
    gen = torch.Generator().manual_seed(seed)
    box, w, amax = cfg.sim.box, cfg.model.window, cfg.sim.action_max
    e, n = start.shape[:2]
    dev = start.device
    hist = [start]
    for _ in range(w - 1):  # let the world run a moment so the context window is full
        hist.append(sim_step(hist[-1], physics, None, box))
    t = 0
    while t < steps:
        window = torch.stack(hist[-w:], dim=1)
        h = steps - t
        if method == "none":
            acts = torch.zeros(e, h, 2, device=dev)
        elif method == "random":  # impulses drawn at random, no model at all
            acts = ((2 * torch.rand(e, h, 2, generator=gen) - 1) * amax).to(dev)
        else:
            ctx = dyn.prepare(window, physics, body)
            guess = None if method == "shooting" else aim(window[:, -1], body, physics, goal, h, amax)
            res = cem(dyn, ctx, goal, h, budget, amax, gen, uniform=(method == "shooting"),
                      iterations=1 if method == "shooting" else 4, mean=guess)
            acts = res.actions
        for k in range(min(replan_every, h)):
            full = _body_actions(acts[:, None, k:k + 1], body, n)[:, 0]
            hist.append(sim_step(hist[-1], physics, full, box))
        t += min(replan_every, h)
    final = hist[-1][torch.arange(e, device=dev), body, 0:2]
    return (final - goal[:, 0:2]).norm(dim=-1)
