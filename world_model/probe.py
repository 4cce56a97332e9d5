"""Reading physical quantities back out of latents.

The first four coordinates of every latent are the body's state (see
model.py), so the probe is exact and has nothing to learn: it is the
denormalisation. `linear_r2` is the diagnostic for the learned features: how
much of a quantity a ridge regression recovers from them.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .config import Config
from .model import STATE_DIM, denormalise


def read_state(z: Tensor, cfg: Config) -> Tensor:
    """Latents (..., D) -> x, y, vx, vy (..., 4) in physical units."""
    return denormalise(z[..., :STATE_DIM], cfg.sim.box, cfg.model)


def linear_r2(z_train: Tensor, y_train: Tensor, z_test: Tensor, y_test: Tensor,
              ridge: float = 1e-3) -> Tensor:
    """Per-target R^2 of a closed-form ridge regression (with bias)."""
    def aug(z: Tensor) -> Tensor:
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1).double()

    a = aug(z_train)
    eye = torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    w = torch.linalg.solve(a.T @ a + ridge * eye, a.T @ y_train.double())
    pred = aug(z_test) @ w
    y = y_test.double()
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0).clamp(min=1e-12)
    return (1 - ss_res / ss_tot).float()
