"""What a world can teach the predictor beyond its training: the learned terms fine-tuning adapts.

Two terms. Every one of their tensors starts at exactly zero, where they change no prediction;
only fine-tuning on a world trains them (learn/finetune.py; base training leaves them out, its
worlds have neither). While all are zero a model's state dict leaves them out, and a state dict
without them loads with zeros (`fill_missing`): so a blob saved before they existed loads and
predicts bit for bit as it did, base training writes the very bytes it wrote before, and a
fine-tuned model's delta from its base is simply the terms' values.

- The unexplained acceleration. The encoder estimates, per body and axis, the acceleration its
  context window shows that the physics document does not explain (the observed velocity change
  minus what gravity and drag account for), from frames where nothing else can have acted on that
  axis (no wall within reach on that axis, no other body within reach at all), and `Adapt.carry`,
  a gain over bands of its magnitude, decides how much of it the predictor keeps applying in free
  flight. A steady wind shows up here; in simulator worlds the estimate is zero but for an impulse
  inside the window, which does not persist, so the gain learns from replay to drop what looks
  like one. The term is inferred from
  each body's own window, never a constant: the serving model is shared by every world.
- Contacts for restitution below the trained range. The wall and pair networks were trained on
  restitution in [0.5, 1] and extrapolate as they happen to below it. Below the range their
  outputs move by a learned share (`wall_mix`, `pair_mix`) towards what restitution means in the
  physics document (an impulse of (1 + e) x the approach speed, the overlap undone), and a
  learned share (`apart_mix`) of the no-overlap projection (model.separate) is given up where the
  world's own trajectories show bodies pressed into each other (the simulator lets a body stacked
  on another on a lossy floor sink into it: 10% of the lossy world's body-frames overlap by more
  than 2 cm, 0.3% of the trained distribution's). Every share is scaled by how far the world's
  restitution lies below the range: exactly zero inside it, so what a lossy world teaches moves
  no in-range prediction. (Correction networks on top of the shares were tried: on the lossy
  world they fitted noise and made 10-step errors worse.)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .config import PRESENT, RADIUS, ModelConfig, PhysicsRanges

PREFIX = "predictor.adapt."  # where the terms live in a JEPA's state dict
RESTITUTION_LO = PhysicsRanges().restitution[0]  # the low end every shipped model trained on
CLEAR_MARGIN = 0.05  # m beyond reach that counts as "nothing touched it"
# The carried share of an unexplained acceleration is linear in fixed features: bands over its
# magnitude (log2-spaced, 1/8 to 8 m/s^2), each times (1, the physics features). Linear, so it can
# start at exactly zero and still learn. Above CARRY_MAX (half of gravity) nothing is carried,
# whatever was learned: an impulse inside the window reads as tens of m/s^2 and does not persist,
# and a 2-frame window cannot tell a small impulse from a wind. Measured on simulator windows with
# impulses (a model fine-tuned on the 2 m/s^2 wind): error at 10 steps 1.39x the base's with no
# cap, 1.23x with a cap of 10 m/s^2, 1.09x with 5; the wind itself is learned as well with each.
BANDS = torch.arange(-3.0, 4.0)  # log2 of the band centres, m/s^2
CARRY_MAX = 5.0  # m/s^2
PHYSICS_FEATS = 5


class Adapt(nn.Module):
    def __init__(self, mc: ModelConfig):
        super().__init__()
        self.mc = mc
        self.carry = nn.Parameter(torch.zeros(len(BANDS), PHYSICS_FEATS))
        self.wall_mix = nn.Parameter(torch.zeros(4))
        self.pair_mix = nn.Parameter(torch.zeros(2))
        self.apart_mix = nn.Parameter(torch.zeros(1))
        self.requires_grad_(False)  # fine-tuning turns them on (learn/finetune.py)
        self.register_state_dict_post_hook(_leave_out_while_zero)

    def carries(self) -> bool:
        """Whether any acceleration is carried at all (the gain is exactly zero until fine-tuned)."""
        return bool(self.carry.any())

    def carried(self, accel: Tensor, physics: Tensor) -> Tensor:
        """Observed unexplained acceleration (B, N, 2) -> what free flight applies (B, N, 2)."""
        mc = self.mc
        g, e, drag, dt = physics.unbind(-1)
        pf = torch.stack([torch.ones_like(g), g / mc.gravity_scale, e * 2 - 1, drag * 2, dt / mc.dt_scale - 1], -1)
        size = accel.norm(dim=-1)
        level = torch.log2(size.clamp(min=1e-6))
        bands = torch.exp(-0.5 * (level[..., None] - BANDS.to(accel.device)) ** 2)  # (B, N, K)
        gain = torch.einsum("bnk,bj,kj->bn", bands, pf, self.carry) * (size <= CARRY_MAX)
        return gain[..., None] * accel

    def wall_out(self, out: Tensor, active: Tensor, physics: Tensor, v_in: Tensor) -> Tensor:
        """The wall network's (B, N, 4) outputs (model.Predictor._walls), corrected below the range."""
        below = below_range(physics)
        if not bool((below > 0).any()):
            return out
        e = physics[:, 1, None].expand_as(v_in)
        zero = torch.zeros_like(v_in)
        prior = torch.stack([1 + e, zero, (1 + e) * (v_in > 0), zero], -1)  # the simulator's bounce
        return out + below[:, None, None] * self.wall_mix * (prior - out) * active[..., None]

    def pair_out(self, out: Tensor, active: Tensor, physics: Tensor, v_n: Tensor) -> Tensor:
        """The pair network's (B, N, N, 2) outputs (model.Predictor._pairs), corrected below the range."""
        below = below_range(physics)
        if not bool((below > 0).any()):
            return out
        e = physics[:, 1, None, None].expand_as(v_n)
        prior = torch.stack([(1 + e) * (v_n < 0), torch.ones_like(v_n)], -1)  # impulse when approaching; push apart
        return out + below[:, None, None, None] * self.pair_mix * (prior - out) * active[..., None]

    def kept_apart(self, pos: Tensor, separated: Tensor, r: Tensor, box: float, physics: Tensor) -> Tensor:
        """model.separate's result, less the learned share of its pair pushes below the range."""
        below = below_range(physics)
        if not bool((below > 0).any()):
            return separated
        inside = torch.minimum(torch.maximum(pos, r[..., None]), box - r[..., None])  # the walls alone
        return separated + (below[:, None, None] * self.apart_mix) * (inside - separated)


def below_range(physics: Tensor) -> Tensor:
    """(B,) how far restitution lies below the trained range, in units of that range's low end:
    0 inside it, 1 at restitution 0."""
    return ((RESTITUTION_LO - physics[:, 1]) / RESTITUTION_LO).clamp(min=0)


def unexplained_acceleration(window: Tensor, physics: Tensor, box: float,
                             frame_visible: Tensor | None = None) -> Tensor:
    """(B, W, N, OBS) window -> (B, N, 2) acceleration, m/s^2, that gravity and drag do not explain:
    the median over the window's consecutive frame pairs where the body was clear on that axis,
    0 where no pair was. Impulses are not known to the encoder; they count as unexplained."""
    b, w, n, _ = window.shape
    if w < 2:
        return window.new_zeros(b, n, 2)
    g, e, drag, dt = (physics[:, i, None, None, None] for i in range(4))  # each (B, 1, 1, 1)
    pos, vel, r = window[..., 0:2], window[..., 2:4], window[..., RADIUS]
    live = window[..., PRESENT] > 0
    if frame_visible is not None:
        live = live & (frame_visible[:, :, None] > 0)
    # A contact between two frames leaves its mark on the later one: a wall bounce leaves the body
    # within its new speed x dt of the wall, a pair contact leaves the two touching (pushed apart
    # to their radii). So the later frame of each pair decides; the earlier need only be seen.
    reach = r[..., None] + vel.abs() * dt + CLEAR_MARGIN
    clear = (pos > reach) & (pos < box - reach)  # per axis: no wall bounce into this frame
    gap = (pos[:, :, :, None] - pos[:, :, None, :]).norm(dim=-1) - r[..., :, None] - r[..., None, :]
    eye = torch.eye(n, dtype=torch.bool, device=window.device)
    touching = (gap < 2 * CLEAR_MARGIN) & live[..., None, :] & ~eye
    ok = clear & (live & ~touching.any(-1))[..., None]  # a pair contact moves both axes
    ok = ok[:, 1:] & live[:, :-1, :, None]  # (B, W-1, N, 2)
    # Free flight in the simulator: v' = (v + a dt - g dt y) exp(-drag dt); solve for a.
    gvec = torch.cat([torch.zeros_like(g[..., 0:1]), -g[..., 0:1] * dt[..., 0:1]], -1)
    a = (vel[:, 1:] * torch.exp(drag * dt) - vel[:, :-1] - gvec) / dt
    a = torch.where(ok, a, torch.full_like(a, float("nan"))).nanmedian(dim=1).values
    return torch.nan_to_num(a, nan=0.0)


def fill_missing(state: Mapping[str, Any], adapt: Adapt) -> dict[str, Any]:
    """A state dict without some or all of the terms (saved before they existed, or while they were
    zero) completed with zeros: the one place old blobs are upgraded."""
    out = dict(state)
    for name, p in adapt.named_parameters():
        out.setdefault(PREFIX + name, torch.zeros_like(p))
    return out


def _leave_out_while_zero(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """Untrained terms are not stored: the state dict, and so every blob, is what it was before."""
    if any(bool(p.detach().any()) for p in module.parameters()):
        return
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]
    meta = getattr(state, "_metadata", None)
    if meta is not None:
        for key in [k for k in meta if k == prefix[:-1] or k.startswith(prefix)]:
            del meta[key]
