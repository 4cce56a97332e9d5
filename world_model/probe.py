"""Probes that read physical quantities back out of frozen latents.

`Probe` is the small MLP used for readable answers (positions, velocities).
It is trained after the JEPA, with the JEPA frozen: on encoder latents of
observed windows and on latents the predictor rolled forward, so it reads the
states the inference API actually produces. `linear_r2` is the diagnostic:
how much of the state a ridge regression recovers from encoder latents.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ModelConfig


class Probe(nn.Module):
    """Per-entity latent -> normalised (x, y, vx, vy)."""

    def __init__(self, mc: ModelConfig, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(mc.latent_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 4))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def normalise_state(frames: Tensor, box: float, mc: ModelConfig) -> Tensor:
    """(..., OBS_DIM) -> (..., 4) probe targets in O(1) units."""
    half = box / 2
    return torch.cat([(frames[..., 0:2] - half) / half, frames[..., 2:4] / mc.vel_scale], dim=-1)


def denormalise_state(y: Tensor, box: float, mc: ModelConfig) -> Tensor:
    half = box / 2
    return torch.cat([y[..., 0:2] * half + half, y[..., 2:4] * mc.vel_scale], dim=-1)


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
