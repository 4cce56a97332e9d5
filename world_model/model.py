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
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapt import Adapt, fill_missing, unexplained_acceleration
from .config import MASS, PRESENT, RADIUS, ModelConfig, TrainConfig

STATE_DIM = 4  # x, y, vx, vy: the first coordinates of every latent
FRAME_FEATS = 6  # x, y, vx, vy, present, frame-visible (per window frame)
STATIC_FEATS = 2  # radius, mass (physical units): the contact networks need them exactly
WALL_FEATS = 8
PAIR_FEATS = 7
# Scales that make contact features O(1): penetrations are centimetres.
DEPTH_SCALE = 0.1


class Encoded(NamedTuple):
    z: Tensor  # (B, N, D) per-entity latents
    valid: Tensor  # (B, N) bool: the entity exists in the window
    static: Tensor  # (B, N, STATIC_FEATS) radius and mass
    accel: Tensor  # (B, N, 2) acceleration the window shows and the physics does not explain, m/s^2


def featurize(frames: Tensor, box: float, mc: ModelConfig, frame_visible: Tensor | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
    """(B, W, N, OBS_DIM) raw frames -> window inputs (B, N, W*FRAME_FEATS),
    radius and mass (B, N, 2) and (B, N) bool "entity exists in the window"."""
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
    mass = torch.where(seen > 0, (frames[..., MASS] * pres).amax(dim=1), torch.ones_like(seen))
    return per.permute(0, 2, 1, 3).reshape(b, n, w * FRAME_FEATS), torch.stack([radius, mass], -1), seen > 0


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


def _head(net: nn.Sequential, bias: list[float]) -> None:
    """Start a contact network at a fixed guess (zero weights, this bias)."""
    last = net[-1]
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.copy_(torch.tensor(bias))


def _sparse(net: nn.Module, inputs: Tensor, active: Tensor, out_dim: int) -> Tensor:
    """`net` on the active rows only (contacts are rare: most bodies touch
    nothing on a given step); zeros elsewhere."""
    out = inputs.new_zeros(*active.shape, out_dim)
    if bool(active.any()):
        out[active] = net(inputs[active])
    return out


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


class Predictor(nn.Module):
    """One step of every body: free flight from the physics, then learned
    wall and pair contact responses, then projection into the box."""

    def __init__(self, mc: ModelConfig, box: float):
        super().__init__()
        self.mc, self.box = mc, box
        dh, d = mc.latent_dim - STATE_DIM, mc.d_model
        # Outputs scale what the free step did: pushes back (1 + e) x penetration and
        # reverses (1 + e) x the speed into the wall when it is elastic; learned, not given.
        self.wall = mlp(WALL_FEATS + dh, d, 4, mc.pred_layers)
        self.pair = mlp(PAIR_FEATS + 2 * dh, d, 2, mc.pred_layers)
        self.update = mlp(dh + 2 * STATE_DIM + 4 + 3, d, dh, mc.pred_layers)
        _head(self.wall, [1.75, 0.0, 1.75, 0.0])
        _head(self.pair, [1.75, 1.0])
        _head(self.update, [0.0] * dh)
        self.adapt = Adapt(mc)

    def forward(self, z: Tensor, action: Tensor, valid: Tensor, static: Tensor, physics: Tensor,
                accel: Tensor | None = None) -> Tensor:
        """`accel` (B, N, 2): the carried unexplained acceleration (Adapt.carried), m/s^2."""
        mc, box = self.mc, self.box
        s, h = z[..., :STATE_DIM], z[..., STATE_DIM:]
        x = denormalise(s, box, mc)
        r, m = static[..., 0], static[..., 1]
        g, e, drag, dt = (physics[:, i, None] for i in range(4))  # each (B, 1)
        live = valid[..., None].float()

        # Free flight: exactly what the physics document prescribes.
        vel = x[..., 2:4] + action / m[..., None] * live
        vel = torch.cat([vel[..., 0:1], vel[..., 1:2] - (g * dt)[..., None]], -1)
        if accel is not None:  # in the simulator's order: after gravity, before drag
            vel = vel + accel * (dt[..., None] * live)
        vel = vel * torch.exp(-drag * dt)[..., None]
        pos = x[..., 0:2] + vel * dt[..., None]

        pos, vel, walls = self._walls(pos, vel, r, h, valid, physics)
        pos, vel, touching = self._pairs(pos, vel, r, m, h, valid, physics)
        pos = self.adapt.kept_apart(pos, separate(pos, r, m, valid, box), r, box, physics)

        s_new = normalise(torch.cat([pos, vel], -1), box, mc)
        pf = physics_features(physics, mc)[:, None].expand(-1, s.shape[1], -1)
        h_new = h + self.update(torch.cat([h, s, (s_new - s) * 10, pf, walls, touching], -1))
        out = torch.cat([s_new, h_new], -1)
        return torch.where(valid[..., None], out, z)

    def _walls(self, pos: Tensor, vel: Tensor, r: Tensor, h: Tensor, valid: Tensor, physics: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """Per axis, the wall a body ended up behind after the free step (if any)."""
        mc, box = self.mc, self.box
        g, e, drag, dt = physics.unbind(-1)
        new_pos, new_vel, hits = [], [], []
        for ax in range(2):
            p, v = pos[..., ax], vel[..., ax]
            below, above = r - p, p - (box - r)
            depth = torch.maximum(below, above)
            active = valid & (depth > 0)
            if not bool(active.any()):  # most steps touch no wall: what follows would change nothing
                new_pos.append(p)
                new_vel.append(v)
                hits.append(active.float())
                continue
            side = torch.where(below > above, 1.0, -1.0)  # +1: the low wall, pushes towards +
            v_in = -side * v  # speed into the wall
            v_tan = vel[..., 1 - ax]
            g_in = (g[:, None] * side * (1.0 if ax == 1 else 0.0)).expand_as(p)  # gravity pulling into it
            feats = torch.stack([
                depth.clamp(min=0) / DEPTH_SCALE, v_in / mc.vel_scale, v_tan.abs() / mc.vel_scale,
                g_in / mc.gravity_scale,
                (e * 2 - 1)[:, None].expand_as(p), (drag * 2)[:, None].expand_as(p),
                (dt / mc.dt_scale - 1)[:, None].expand_as(p), torch.full_like(p, float(ax)),
            ], -1)
            out = self.adapt.wall_out(_sparse(self.wall, torch.cat([feats, h], -1), active, 4), active, physics, v_in)
            dp = out[..., 0] * depth + 0.01 * out[..., 1]
            dv = out[..., 2] * v_in + 0.1 * out[..., 3]
            new_pos.append(torch.where(active, p + side * dp, p))
            new_vel.append(torch.where(active, v + side * dv, v))
            hits.append(active.float())
        return torch.stack(new_pos, -1), torch.stack(new_vel, -1), torch.stack(hits, -1)

    def _pairs(self, pos: Tensor, vel: Tensor, r: Tensor, m: Tensor, h: Tensor, valid: Tensor,
               physics: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Every pair that overlaps after the free step exchanges an impulse and
        a push along the line of centres, equal and opposite."""
        mc = self.mc
        n = pos.shape[1]
        if n < 2:
            return pos, vel, torch.zeros_like(pos[..., :1])
        d = pos[:, None, :, :] - pos[:, :, None, :]  # d[b, i, j] = p_j - p_i
        dist = d.norm(dim=-1).clamp(min=1e-6)
        normal = d / dist[..., None]
        overlap = r[:, :, None] + r[:, None, :] - dist
        eye = torch.eye(n, dtype=torch.bool, device=pos.device)
        active = valid[:, :, None] & valid[:, None, :] & ~eye & (overlap > 0)
        if not bool(active.any()):
            return pos, vel, torch.zeros_like(pos[..., :1])
        dv = vel[:, None, :, :] - vel[:, :, None, :]
        v_n = (dv * normal).sum(-1)  # < 0: approaching
        v_t = (dv - v_n[..., None] * normal).norm(dim=-1)
        inv_m = 1.0 / m
        w = inv_m[:, :, None] + inv_m[:, None, :]
        lm = torch.log(m)
        g, e, drag, dt = physics.unbind(-1)
        shape = overlap.shape
        feats = torch.stack([
            overlap.clamp(min=0) / DEPTH_SCALE, v_n / mc.vel_scale, v_t / mc.vel_scale,
            (e * 2 - 1)[:, None, None].expand(shape), lm[:, :, None].expand(shape), lm[:, None, :].expand(shape),
            (dt / mc.dt_scale - 1)[:, None, None].expand(shape),
        ], -1)
        hi, hj = h[:, :, None, :].expand(-1, -1, n, -1), h[:, None, :, :].expand(-1, n, -1, -1)
        out = self.adapt.pair_out(_sparse(self.pair, torch.cat([feats, hi, hj], -1), active, 2), active, physics, v_n)
        out = (out + out.transpose(1, 2)) / 2  # the same response seen from either body
        act = active.float()
        impulse = out[..., 0] * (-v_n) / w * act  # (B, N, N), symmetric
        push = out[..., 1] * overlap.clamp(min=0) / w * act
        vel = vel - inv_m[..., None] * (impulse[..., None] * normal).sum(2)
        pos = pos - inv_m[..., None] * (push[..., None] * normal).sum(2)
        return pos, vel, act.sum(2, keepdim=True)


def separate(pos: Tensor, r: Tensor, m: Tensor, valid: Tensor, box: float, rounds: int = 3,
             tolerance: float = 0.01) -> Tensor:
    """Project positions onto the constraints: inside the box, and no two discs overlapping by more
    than `tolerance`. The learned pair response separates a pair it sees; when three or more bodies
    press together the pushes add up and can leave one pair overlapping (measured: 0.27 m in 1 of
    918 pairs of crowded five-body worlds), so what is left is pushed apart, lighter body more."""
    lo, hi = r[..., None], box - r[..., None]
    pos = torch.minimum(torch.maximum(pos, lo), hi)
    n = pos.shape[1]
    if n < 2:
        return pos
    eye = torch.eye(n, dtype=torch.bool, device=pos.device)
    both = valid[:, :, None] & valid[:, None, :] & ~eye
    inv_m = 1.0 / m
    w = inv_m[:, :, None] + inv_m[:, None, :]
    for _ in range(rounds):
        d = pos[:, None, :, :] - pos[:, :, None, :]
        dist = d.norm(dim=-1).clamp(min=1e-6)
        excess = (r[:, :, None] + r[:, None, :] - dist - tolerance).clamp(min=0) * both
        if not bool((excess > 0).any()):
            break
        push = (excess / w)[..., None] * d / dist[..., None]  # (B, N, N, 2), along i -> j
        pos = pos - inv_m[..., None] * push.sum(2)  # each body takes its share of each pair's excess
        pos = torch.minimum(torch.maximum(pos, lo), hi)  # walls win over pair pushes
    return pos


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

    def rollout(self, enc: Encoded, physics: Tensor, actions: Tensor) -> Tensor:
        """Encoded latents (B, N, D) and actions (B, K, N, 2) -> predicted (B, K, N, D)."""
        z, out = enc.z, []
        carry = self.predictor.adapt.carried(enc.accel, physics)
        for k in range(actions.shape[1]):
            z = self.predictor(z, actions[:, k], enc.valid, enc.static, physics, carry)
            out.append(z)
        if not out:
            return z.new_zeros(z.shape[0], 0, *z.shape[1:])
        return torch.stack(out, dim=1)

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
