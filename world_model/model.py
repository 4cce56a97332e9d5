"""The JEPA, in one file.

  window of entity observations --(context encoder)--> per-entity latents z_t
  z_t, actions --(predictor, k times)--> z_hat_{t+k}
  window ending at t+k --(EMA target encoder, no grad)--> z_{t+k}
  loss = |z_hat_{t+k} - sg(z_{t+k})|^2 + VICReg variance/covariance on z_t

The latent of a body has two parts, and the split is what makes the model
trustworthy at every horizon:

  z = [state (4): x, y, vx, vy normalised | features (D - 4): learned]

- The state part is the body's last observed state, carried in the latent
  rather than re-learned, so nothing drifts from what was seen and the probe
  reads it exactly (an earlier model that decoded absolute positions from a
  free latent was 8x worse than constant velocity at one step and let resting
  bodies float away).
- The predictor advances the state with what the physics document says
  (impulse, gravity, drag: semi-implicit Euler, the free-flight part) and
  learns what it does not say in closed form: how bodies respond to contact
  with a wall or with each other. Contact responses come from small networks
  that see only a body and the wall it touches, or a pair of bodies that touch
  after the free step (an interaction network with a contact radius, as in
  GNS), so a body's prediction cannot depend on bodies that never come near
  it. A pair's response acts on both bodies with opposite signs (Newton's
  third law), and positions are projected back inside the box (no sinking).
  This is APHYNITY's split: a known physical model plus a learned part for
  what it leaves out.
- The learned features summarise the entity's recent window (what one frame
  cannot show: its recent acceleration and contacts). The predictor rolls
  them forward too, the EMA target encoder gives their targets, VICReg keeps
  them from collapsing, and they condition the contact networks. Surprise is
  the distance between predicted and observed latents over both parts.
- What fine-tuning on a world adapts (adapt.py), zero until then: an unexplained acceleration the
  encoder reads off each body's window (a wind) and the predictor keeps applying in free flight,
  and contact corrections for restitution below the trained range.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapt import fill_missing, unexplained_acceleration
from .config import MASS, PRESENT, RADIUS, ModelConfig, TrainConfig
# The latent's layout and the predictor live in modules of their own; these names stay importable here.
from .latent import STATE_DIM, STATIC_FEATS, Encoded, denormalise, mlp, normalise, physics_features
from .predictor import Predictor, separate

__all__ = ["FRAME_FEATS", "JEPA", "STATE_DIM", "STATIC_FEATS", "Encoded", "Encoder", "Predictor", "denormalise",
           "bodies", "energy", "featurize", "mlp", "normalise", "physics_features", "separate", "surprise_score",
           "vicreg_terms"]

FRAME_FEATS = 6  # x, y, vx, vy, present, frame-visible (per window frame)


def bodies(frames: Tensor, frame_visible: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, W, N, OBS_DIM) raw frames -> presence per frame (B, W, N), radius and mass (B, N, 2),
    and (B, N) bool "entity exists in the window"."""
    pres = frames[..., PRESENT] * frame_visible[:, :, None]  # (B, W, N)
    seen = pres.amax(dim=1)  # (B, N)
    radius = (frames[..., RADIUS] * pres).amax(dim=1)
    mass = torch.where(seen > 0, (frames[..., MASS] * pres).amax(dim=1), torch.ones_like(seen))
    return pres, torch.stack([radius, mass], -1), seen > 0


def featurize(frames: Tensor, box: float, mc: ModelConfig, frame_visible: Tensor | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
    """(B, W, N, OBS_DIM) raw frames -> window inputs (B, N, W*FRAME_FEATS),
    radius and mass (B, N, 2) and (B, N) bool "entity exists in the window"."""
    b, w, n, _ = frames.shape
    if frame_visible is None:
        frame_visible = torch.ones(b, w, device=frames.device)
    pres, static, valid = bodies(frames, frame_visible)
    half = box / 2
    per = torch.cat([
        (frames[..., 0:2] - half) / half,
        frames[..., 2:4] / mc.vel_scale,
        torch.ones_like(frames[..., :1]),
        frame_visible[:, :, None, None].expand(b, w, n, 1),
    ], dim=-1) * pres[..., None]
    per[..., 5] = frame_visible[:, :, None].expand(b, w, n)  # visibility flag even for absent bodies
    return per.permute(0, 2, 1, 3).reshape(b, n, w * FRAME_FEATS), static, valid


class Encoder(nn.Module):
    """Per entity, no attention across entities: a body's latent depends on
    its own window and the physics only."""

    def __init__(self, mc: ModelConfig, box: float):
        super().__init__()
        self.mc, self.box = mc, box
        self.net = mlp(mc.window * FRAME_FEATS + 4, mc.d_model, mc.latent_dim - STATE_DIM, mc.enc_layers)

    def forward(self, window: Tensor, physics: Tensor, frame_visible: Tensor | None = None) -> Encoded:
        dyn, static, valid = featurize(window, self.box, self.mc, frame_visible)
        pf = physics_features(physics, self.mc)[:, None].expand(-1, dyn.shape[1], -1)
        h = self.net(torch.cat([dyn, pf], -1))
        s = normalise(window[:, -1, :, 0:4], self.box, self.mc)
        z = torch.cat([s, h], -1) * valid[..., None]
        accel = unexplained_acceleration(window, physics, self.box, frame_visible) * valid[..., None]
        return Encoded(z, valid, static, accel)


class JEPA(nn.Module):
    def __init__(self, mc: ModelConfig, box: float):
        super().__init__()
        if mc.latent_dim <= STATE_DIM:
            raise ValueError(f"latent_dim must exceed {STATE_DIM}")
        self.mc, self.box = mc, box
        self.encoder = Encoder(mc, box)
        self.target = copy.deepcopy(self.encoder)
        self.target.requires_grad_(False)
        self.predictor = Predictor(mc, box)
        # Typical squared prediction error per horizon step and latent dimension
        # on normal data, set by calibration after training; surprise divides
        # by it so dimensions the predictor normally gets right weigh more.
        self.register_buffer("energy_var", torch.ones(mc.max_horizon, mc.latent_dim))

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Blobs saved before adapt.py's terms existed load with those terms at their zero start."""
        return super().load_state_dict(fill_missing(state_dict, self.predictor.adapt), *args, **kwargs)

    def full_state_dict(self) -> dict[str, Any]:
        """state_dict with adapt.py's terms even while zero (it leaves them out then): for weight arithmetic."""
        return fill_missing(self.state_dict(), self.predictor.adapt)

    def encode(self, window: Tensor, physics: Tensor, frame_visible: Tensor | None = None,
               target: bool = False) -> Encoded:
        """(B, W, N, OBS_DIM) -> per-entity latents (B, N, D) and what the predictor needs."""
        return (self.target if target else self.encoder)(window, physics, frame_visible)

    def rollout(self, enc: Encoded, physics: Tensor, actions: Tensor, features: bool = True) -> Tensor:
        """Encoded latents (B, N, D) and actions (B, K, N, 2) -> predicted (B, K, N, D); with
        `features` False the states alone, (B, K, N, STATE_DIM), the same numbers, sooner
        (predictor.py: what a rollout skips and why)."""
        carry = self.predictor.adapt.carried(enc.accel, physics)
        return self.predictor.rollout(enc.z, enc.valid, enc.static, physics, carry, actions, features)

    def predict_states(self, window: Tensor, physics: Tensor, actions: Tensor,
                       frame_visible: Tensor | None = None) -> Tensor:
        """States (B, K, N, STATE_DIM) after each step from a window (B, W, N, OBS_DIM):
        rollout(encode(...), ..., features=False), the same numbers. Outside gradient mode it
        encodes the learned features only if a contact needs them (Predictor.states), and reads the
        unexplained acceleration off the window only if adapt.py's carry is trained."""
        if torch.is_grad_enabled():
            return self.rollout(self.encode(window, physics, frame_visible), physics, actions, features=False)
        if frame_visible is None:
            frame_visible = torch.ones(window.shape[0], window.shape[1], device=window.device)
        _, static, valid = bodies(window, frame_visible)
        keep = valid[..., None]  # encode() zeroes the latents of bodies absent from the window
        s = normalise(window[:, -1, :, 0:4], self.box, self.mc) * keep
        adapt = self.predictor.adapt
        carry = None
        if adapt.carries():
            carry = adapt.carried(unexplained_acceleration(window, physics, self.box, frame_visible) * keep, physics)
        return self.predictor.states(s, lambda: self.encode(window, physics, frame_visible).z[..., STATE_DIM:],
                                     valid, static, physics, carry, actions)

    def read_state(self, z: Tensor) -> Tensor:
        """Latents (..., D) -> x, y, vx, vy (..., 4) in physical units."""
        return denormalise(z[..., :STATE_DIM], self.box, self.mc)

    def encode_windows(self, frames: Tensor, physics: Tensor, target: bool = True) -> tuple[Tensor, Tensor]:
        """Every full window of (B, T, N, OBS_DIM): latents (B, T-W+1, N, D)."""
        w = self.mc.window
        wins = frames.unfold(1, w, 1).permute(0, 1, 4, 2, 3)  # (B, T-W+1, W, N, OBS)
        b, k = wins.shape[:2]
        enc = self.encode(wins.reshape(b * k, *wins.shape[2:]), physics.repeat_interleave(k, 0), target=target)
        return enc.z.view(b, k, *enc.z.shape[1:]), enc.valid.view(b, k, -1)

    def loss(self, frames: Tensor, actions: Tensor, physics: Tensor, tc: TrainConfig,
             gen: torch.Generator | None = None) -> dict[str, Tensor]:
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
        pred = self.rollout(enc, physics, actions[:, w - 1:w - 1 + k])
        with torch.no_grad():
            tgt, _ = self.encode_windows(frames[:, 1:], physics, target=True)
        m = enc.valid[:, None, :].float()
        denom = m.sum().clamp(min=1)
        x_hat, x_true = self.read_state(pred), frames[:, w:, :, 0:4]
        scaled = torch.cat([(x_hat[..., 0:2] - x_true[..., 0:2]) / tc.loss_pos_scale,
                            (x_hat[..., 2:4] - x_true[..., 2:4]) / tc.loss_vel_scale], -1)
        state_loss = (F.huber_loss(scaled, torch.zeros_like(scaled), reduction="none").sum(-1) * m).sum() / (denom * k)
        feat_loss = ((((pred - tgt) ** 2)[..., STATE_DIM:]).mean(-1) * m).sum() / (denom * k)
        var_loss, cov_loss = vicreg_terms(enc.z[..., STATE_DIM:][enc.valid])
        total = (tc.state_weight * state_loss + tc.pred_weight * feat_loss
                 + tc.var_weight * var_loss + tc.cov_weight * cov_loss)
        return {"loss": total, "state": state_loss, "pred": feat_loss, "var": var_loss, "cov": cov_loss}

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
