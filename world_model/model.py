"""The JEPA, in one file.

  window of entity observations --(context encoder)--> per-entity latents z_t
  z_t, actions --(predictor, k times)--> z_hat_{t+k}
  window ending at t+k --(EMA target encoder, no grad)--> z_{t+k}
  loss = |z_hat_{t+k} - sg(z_{t+k})|^2 + VICReg variance/covariance on z_t

Both the encoder and the predictor are transformers over the set of entities
(no positional encoding: permuting bodies permutes the latents). Physics
constants are a conditioning vector added to every token and also an extra
token every entity can attend to; it also keeps attention well defined when a
world has no bodies left.

What goes where, and why: the encoder sees positions and velocities (two
frames) plus the physics; radius and mass are fed to the predictor as
conditioning instead, because an encoder that sees them can satisfy the
variance term with constant-in-time features and learn little about motion.
The encoder also has a linear skip path from its inputs to the latent, which
keeps the state linearly readable while attention learns the rest.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MASS, PRESENT, RADIUS, ModelConfig

FRAME_FEATS = 6  # x, y, vx, vy, present, frame-visible (per window frame)
STATIC_FEATS = 2  # radius, log mass


class Encoded(NamedTuple):
    z: Tensor  # (B, N, D) per-entity latents
    valid: Tensor  # (B, N) bool: the entity exists in the window
    static: Tensor  # (B, N, STATIC_FEATS) radius and mass features, conditioning for the predictor


def featurize(frames: Tensor, box: float, mc: ModelConfig, frame_visible: Tensor | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
    """(B, W, N, OBS_DIM) raw frames -> dynamic inputs (B, N, W*FRAME_FEATS),
    static inputs (B, N, STATIC_FEATS) and (B, N) bool "entity exists in the
    window". Only rescaling happens here."""
    b, w, n, _ = frames.shape
    if frame_visible is None:
        frame_visible = torch.ones(b, w, device=frames.device)
    pres = frames[..., PRESENT] * frame_visible[:, :, None]  # (B, W, N)
    half = box / 2
    per = torch.cat([
        (frames[..., 0:2] - half) / half,
        frames[..., 2:4] / mc.vel_scale,
        torch.ones_like(frames[..., :1]),
        frame_visible[:, :, None, None].expand(b, w, n, 1),
    ], dim=-1) * pres[..., None]
    per[..., 5] = frame_visible[:, :, None].expand(b, w, n)  # visibility flag even for absent bodies
    seen = pres.amax(dim=1)  # (B, N)
    radius = (frames[..., RADIUS] * pres).amax(dim=1)
    mass = (frames[..., MASS] * pres).amax(dim=1).clamp(min=1e-3)
    static = torch.stack([radius / 0.5 - 1, torch.log(mass)], dim=-1) * seen[..., None]
    return per.permute(0, 2, 1, 3).reshape(b, n, w * FRAME_FEATS), static, seen > 0


def physics_features(physics: Tensor, mc: ModelConfig) -> Tensor:
    g, e, drag, dt = physics.unbind(-1)
    return torch.stack([g / mc.gravity_scale, e * 2 - 1, drag * 2, dt / mc.dt_scale - 1], dim=-1)


def mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))


class Block(nn.Module):
    """Pre-LayerNorm transformer block with a key-padding mask."""

    def __init__(self, d: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = mlp(d, mlp_ratio * d, d)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class SetTransformer(nn.Module):
    """Entity tokens plus one physics token through `layers` blocks."""

    def __init__(self, in_dim: int, out_dim: int, mc: ModelConfig, layers: int, skip: bool = False):
        super().__init__()
        d = mc.d_model
        # A linear path from inputs to outputs: the encoder starts out keeping
        # every input quantity linearly readable and learns corrections on top.
        self.skip = nn.Linear(in_dim, out_dim) if skip else None
        self.embed = mlp(in_dim, d, d)
        self.cond = mlp(4, d, d)
        self.phys_token = mlp(4, d, d)
        self.blocks = nn.ModuleList(Block(d, mc.heads, mc.mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, out_dim)

    def forward(self, tokens: Tensor, valid: Tensor, phys: Tensor, extra: Tensor | None = None) -> Tensor:
        x = self.embed(tokens) + self.cond(phys)[:, None]
        if extra is not None:
            x = x + extra
        x = torch.cat([self.phys_token(phys)[:, None], x], dim=1)
        mask = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        for blk in self.blocks:
            x = blk(x, mask)
        out = self.head(self.norm(x[:, 1:]))
        return out if self.skip is None else out + self.skip(tokens)


class Predictor(nn.Module):
    """z_{t+1} = z_t + f(z, action, physics): residual, so an untrained
    predictor starts as "nothing changes" instead of noise."""

    def __init__(self, mc: ModelConfig):
        super().__init__()
        self.net = SetTransformer(mc.latent_dim, mc.latent_dim, mc, mc.pred_layers)
        self.act = mlp(2, mc.d_model, mc.d_model)
        self.static = mlp(STATIC_FEATS, mc.d_model, mc.d_model)
        self.action_scale = mc.action_scale
        nn.init.zeros_(self.net.head.weight)
        nn.init.zeros_(self.net.head.bias)

    def forward(self, z: Tensor, action: Tensor, valid: Tensor, static: Tensor, phys: Tensor) -> Tensor:
        extra = self.act(action / self.action_scale) + self.static(static)
        return z + self.net(z, valid, phys, extra=extra)


class JEPA(nn.Module):
    def __init__(self, mc: ModelConfig, box: float):
        super().__init__()
        self.mc, self.box = mc, box
        in_dim = mc.window * FRAME_FEATS + (STATIC_FEATS if mc.encoder_static else 0)
        self.encoder = SetTransformer(in_dim, mc.latent_dim, mc, mc.enc_layers, skip=mc.encoder_skip)
        self.target = copy.deepcopy(self.encoder)
        self.target.requires_grad_(False)
        self.predictor = Predictor(mc)
        # Typical squared prediction error per horizon step and latent dimension
        # on normal data, set by calibration after training; surprise divides
        # by it so dimensions the predictor normally gets right weigh more.
        self.register_buffer("energy_var", torch.ones(mc.max_horizon, mc.latent_dim))

    def encode(self, window: Tensor, physics: Tensor, frame_visible: Tensor | None = None,
               target: bool = False) -> Encoded:
        """(B, W, N, OBS_DIM) -> per-entity latents (B, N, D) and what the predictor needs."""
        dyn, static, valid = featurize(window, self.box, self.mc, frame_visible)
        feats = torch.cat([dyn, static], dim=-1) if self.mc.encoder_static else dyn
        pf = physics_features(physics, self.mc)
        if not self.mc.encoder_physics:
            pf = torch.zeros_like(pf)
        net = self.target if target else self.encoder
        return Encoded(net(feats, valid, pf), valid, static)

    def rollout(self, enc: Encoded, physics: Tensor, actions: Tensor) -> Tensor:
        """Encoded latents (B, N, D) and actions (B, K, N, 2) -> predicted (B, K, N, D)."""
        pf = physics_features(physics, self.mc)
        z, out = enc.z, []
        for k in range(actions.shape[1]):
            z = self.predictor(z, actions[:, k], enc.valid, enc.static, pf)
            out.append(z)
        if not out:
            return z.new_zeros(z.shape[0], 0, *z.shape[1:])
        return torch.stack(out, dim=1)

    def encode_windows(self, frames: Tensor, physics: Tensor, target: bool = True) -> tuple[Tensor, Tensor]:
        """Every full window of (B, T, N, OBS_DIM): latents (B, T-W+1, N, D)."""
        w = self.mc.window
        wins = frames.unfold(1, w, 1).permute(0, 1, 4, 2, 3)  # (B, T-W+1, W, N, OBS)
        b, k = wins.shape[:2]
        enc = self.encode(wins.reshape(b * k, *wins.shape[2:]), physics.repeat_interleave(k, 0), target=target)
        return enc.z.view(b, k, *enc.z.shape[1:]), enc.valid.view(b, k, -1)

    def loss(self, frames: Tensor, actions: Tensor, physics: Tensor, tc, gen: torch.Generator | None = None
             ) -> dict[str, Tensor]:
        """frames (B, W+K, N, OBS), actions (B, W+K-1, N, 2): the context window
        ends at frame W-1 and the predictor is unrolled K steps from it."""
        w = self.mc.window
        k = frames.shape[1] - w
        vis = torch.ones(frames.shape[0], w, device=frames.device)
        if w > 1 and tc.frame_dropout > 0:
            # Hide the older frames sometimes so single-frame queries are in-distribution.
            drop = torch.rand(frames.shape[0], generator=gen).to(frames.device) < tc.frame_dropout
            vis[:, :-1] = (~drop).float()[:, None]
        enc = self.encode(frames[:, :w], physics, vis)
        z, valid = enc.z, enc.valid
        pred = self.rollout(enc, physics, actions[:, w - 1:w - 1 + k])
        with torch.no_grad():
            tgt, _ = self.encode_windows(frames[:, 1:], physics, target=True)
        m = valid[:, None, :, None].float()
        pred_loss = (((pred - tgt) ** 2) * m).sum() / (m.sum() * z.shape[-1]).clamp(min=1)
        var_loss, cov_loss = vicreg_terms(z[valid])
        total = tc.pred_weight * pred_loss + tc.var_weight * var_loss + tc.cov_weight * cov_loss
        return {"loss": total, "pred": pred_loss, "var": var_loss, "cov": cov_loss}

    def surprise(self, frames: Tensor, actions: Tensor, physics: Tensor,
                 frame_visible: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """frames (B, W+H, N, OBS): W context frames then H observed ones;
        actions (B, H, N, 2) applied between them. Returns the energy between
        the predicted and the observed (target-encoded) latent, (B, H, N), and
        which entities existed in the context, (B, N)."""
        w = self.mc.window
        enc = self.encode(frames[:, :w], physics, frame_visible)
        pred = self.rollout(enc, physics, actions)
        obs, _ = self.encode_windows(frames[:, 1:], physics, target=True)
        return energy(pred, obs, self.energy_var[: pred.shape[1], None]), enc.valid

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        for pt, po in zip(self.target.parameters(), self.encoder.parameters()):
            pt.mul_(momentum).add_(po.detach(), alpha=1 - momentum)


def vicreg_terms(z: Tensor) -> tuple[Tensor, Tensor]:
    """Variance hinge (std of every dimension >= 1) and off-diagonal covariance,
    over all real entities of the batch: the explicit guard against collapse."""
    if z.shape[0] < 2:
        zero = z.sum() * 0
        return zero, zero
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + 1e-4)
    var_loss = F.relu(1 - std).mean()
    cov = (z.T @ z) / (z.shape[0] - 1)
    off = cov - torch.diag(torch.diag(cov))
    return var_loss, (off ** 2).sum() / z.shape[1]


def surprise_score(e: Tensor, valid: Tensor) -> Tensor:
    """(B, H, N) energies -> (B,) score: the most surprising entity's median
    energy over the steps. The median ignores a one-step miss (a bounce
    predicted a step late) but not an error that persists (a teleport)."""
    per_entity = e.median(dim=1).values.masked_fill(~valid, float("-inf"))
    return per_entity.amax(-1).clamp(min=0)


def energy(pred: Tensor, observed: Tensor, var: Tensor | None = None) -> Tensor:
    """Surprise energy: mean squared latent distance per entity (..., N),
    each dimension scaled by its typical error when `var` is given."""
    d2 = (pred - observed) ** 2
    return (d2 if var is None else d2 / var).mean(-1)
