"""The latent's layout and the maps in and out of it, shared by the encoder (model.py) and the
predictor (predictor.py).

A body's latent is [state (STATE_DIM): x, y, vx, vy normalised | learned features]; model.py's
docstring says why.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn
import torch

from .config import ModelConfig

STATE_DIM = 4  # x, y, vx, vy: the first coordinates of every latent
STATIC_FEATS = 2  # radius, mass (physical units): the contact networks need them exactly


class Encoded(NamedTuple):
    z: Tensor  # (B, N, D) per-entity latents
    valid: Tensor  # (B, N) bool: the entity exists in the window
    static: Tensor  # (B, N, STATIC_FEATS) radius and mass
    accel: Tensor  # (B, N, 2) acceleration the window shows and the physics does not explain, m/s^2


def normalise(pos_vel: Tensor, box: float, mc: ModelConfig) -> Tensor:
    half = box / 2
    return torch.cat([(pos_vel[..., 0:2] - half) / half, pos_vel[..., 2:4] / mc.vel_scale], dim=-1)


def denormalise(s: Tensor, box: float, mc: ModelConfig) -> Tensor:
    half = box / 2
    return torch.cat([s[..., 0:2] * half + half, s[..., 2:4] * mc.vel_scale], dim=-1)


def physics_features(physics: Tensor, mc: ModelConfig) -> Tensor:
    g, e, drag, dt = physics.unbind(-1)
    return torch.stack([g / mc.gravity_scale, e * 2 - 1, drag * 2, dt / mc.dt_scale - 1], dim=-1)


def mlp(i: int, h: int, o: int, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Linear(i, h), nn.SiLU()]
    for _ in range(layers - 1):
        mods += [nn.Linear(h, h), nn.SiLU()]
    return nn.Sequential(*mods, nn.Linear(h, o))
