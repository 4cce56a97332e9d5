"""Baselines the JEPA is measured against.

- constant velocity: x_{t+k} = x_t + k * dt * v_t (no learning at all);
- a supervised next-state MLP (the generative baseline): it sees the whole
  world flattened, predicts the next state of every body in observation
  space, and is unrolled on its own outputs. It trains on the same rollouts
  with the same number of steps and batch size as the JEPA;
- the simulator itself (the oracle, zero error by construction).
"""
from __future__ import annotations

import time

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .config import PRESENT, Config, cosine
from .model import denormalise, normalise, physics_features
from .simulator import Rollouts, sample_windows


def constant_velocity(state: Tensor, physics: Tensor, horizon: int) -> Tensor:
    """state (B, N, OBS) -> positions (B, horizon, N, 2)."""
    k = torch.arange(1, horizon + 1, device=state.device, dtype=state.dtype)
    dt = physics[:, 3]
    return state[:, None, :, 0:2] + (k[None, :, None, None] * dt[:, None, None, None]) * state[:, None, :, 2:4]


class NextStateMLP(nn.Module):
    def __init__(self, cfg: Config, hidden: int = 256):
        super().__init__()
        self.cfg = cfg
        n = cfg.sim.max_bodies
        self.net = nn.Sequential(
            nn.Linear(n * 7 + 4 + n * 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, n * 4))

    def forward(self, state: Tensor, action: Tensor, physics: Tensor) -> Tensor:
        """One step: state (B, N, OBS) -> next state (B, N, OBS)."""
        mc, box = self.cfg.model, self.cfg.sim.box
        pres = state[..., PRESENT:PRESENT + 1]
        x = torch.cat([normalise(state[..., 0:4], box, mc), state[..., 4:5] / 0.5 - 1,
                       torch.log(state[..., 5:6].clamp(min=1e-3)), pres], dim=-1) * pres
        inp = torch.cat([x.flatten(1), physics_features(physics, mc),
                         (action / self.cfg.sim.action_max * pres).flatten(1)], dim=1)
        y = normalise(state[..., 0:4], box, mc) + self.net(inp).view(state.shape[0], -1, 4)
        nxt = state.clone()
        nxt[..., 0:4] = torch.where(pres > 0, denormalise(y, box, mc), state[..., 0:4])
        return nxt

    def rollout(self, state: Tensor, actions: Tensor, physics: Tensor) -> Tensor:
        """(B, N, OBS), actions (B, K, N, 2) -> states (B, K, N, OBS)."""
        out = []
        for k in range(actions.shape[1]):
            state = self(state, actions[:, k], physics)
            out.append(state)
        return torch.stack(out, dim=1)


@torch.enable_grad()
def train_mlp_baseline(cfg: Config, data: Rollouts, steps: int | None = None, progress: bool = False
                       ) -> tuple[NextStateMLP, float]:
    """Same rollouts, steps, batch size and learning-rate schedule as the JEPA."""
    tc = cfg.train
    steps = tc.steps if steps is None else steps
    torch.manual_seed(tc.seed + 3)
    device = data.frames.device
    model = NextStateMLP(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    box, mc = cfg.sim.box, cfg.model
    t0 = time.time()
    for step in tqdm(range(steps), desc="mlp baseline", disable=not progress, leave=False):
        gen = torch.Generator().manual_seed(tc.seed * 7919 + step)
        frames, actions, phys = sample_windows(data, 2, tc.batch_size, gen)
        for g in opt.param_groups:
            g["lr"] = tc.lr * min(1.0, (step + 1) / tc.warmup) if step < tc.warmup else \
                cosine(step - tc.warmup, steps - tc.warmup, tc.lr, tc.lr * 0.05)
        pred = model(frames[:, 0], actions[:, 0], phys)
        m = frames[:, 1, :, PRESENT:PRESENT + 1]
        err = (normalise(pred[..., 0:4], box, mc) - normalise(frames[:, 1, ..., 0:4], box, mc)) ** 2
        loss = (err * m).sum() / (m.sum() * 4).clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model, time.time() - t0
