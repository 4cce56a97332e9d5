"""The JEPA's predictor: one step of every body, and rollouts of many steps (model.py's docstring
says what a step does and why).

A step of a small world is a few dozen tensor ops on tensors of a few dozen numbers, so its cost
is the ops' dispatch (a few microseconds each), not arithmetic: a 4-body, 10-step rollout took
6.7 ms on one CPU thread, 0.64 ms a step, and the whole predict call 7.3 ms. A rollout therefore
spends ops only where they change a number (every shortcut gives the same floats; the predict
call of that query now takes about 1.1 ms, the rollout 0.9):
- what every step shares (the physics' factors, masses, masks) is worked out once (`Shared`);
- outside gradient mode, a step where no body touches a wall or another body skips the contact
  networks and the projection into the box (it would change nothing) after one cheap test;
- a rollout asked for states only (predict, plan) runs the learned features' update only when a
  contact needs the features: in free flight the state never reads them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .adapt import Adapt
from .config import ModelConfig
from .latent import STATE_DIM, Encoded, denormalise, mlp, normalise, physics_features

WALL_FEATS = 8
PAIR_FEATS = 7
# Scales that make contact features O(1): penetrations are centimetres.
DEPTH_SCALE = 0.1


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


class Shared(NamedTuple):
    """What every step of one rollout reads and none changes. Each is the very expression a step
    computed for itself before, so the numbers are the same; none carries a gradient."""

    valid: Tensor  # (B, N) bool
    keep: Tensor  # (B, N, 1) bool: the rows a step advances (the rest keep their latent)
    live: Tensor  # (B, N, 1) float
    static: Tensor  # (B, N, 2) radius, mass
    mass: Tensor  # (B, N, 1)
    physics: Tensor  # (B, 4)
    fall: Tensor  # (B, 1, 1): g dt, what gravity takes from the vertical velocity in a step
    decay: Tensor  # (B, 1, 1): exp(-drag dt)
    dt: Tensor  # (B, 1, 1)
    dt_live: Tensor  # (B, N, 1)
    accel: Tensor | None  # (B, N, 2) the carried unexplained acceleration (Adapt.carried), m/s^2
    pf: Tensor  # (B, N, 4) physics features
    # The contact tests' bounds, with the masks folded in (a row or pair that is not valid never
    # touches): a valid body's centre lies in [low, high] when it touches no wall, and two valid
    # bodies overlap when their centres are closer than `reach`.
    low: Tensor  # (B, N, 1) radius, or -inf
    high: Tensor  # (B, N, 1) box - radius, or inf
    reach: Tensor  # (B, N, N) r_i + r_j for two distinct valid bodies, else -inf
    # Constants as tensors: an op with a Python number converts it first (measured 4.5 us against
    # 1.6 for `a + b` on (1, 4, 2) tensors), and a step is a few dozen such ops.
    zero: Tensor
    half: Tensor  # box / 2
    scale: Tensor  # the velocity scale


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

    def shared(self, valid: Tensor, static: Tensor, physics: Tensor, accel: Tensor | None) -> Shared:
        """`accel` (B, N, 2): the carried unexplained acceleration (Adapt.carried), or None."""
        r, m = static[..., 0], static[..., 1]
        g, e, drag, dt = (physics[:, i, None] for i in range(4))  # each (B, 1)
        live = valid[..., None].float()
        gdt = (g * dt)[..., None]
        n, keep = valid.shape[1], valid[..., None]
        eye = torch.eye(n, dtype=torch.bool, device=valid.device)
        pairs = valid[:, :, None] & valid[:, None, :] & ~eye

        def const(x: float) -> Tensor:
            return torch.tensor(x, dtype=static.dtype, device=static.device)

        inf = const(float("inf"))
        return Shared(valid, keep, live, static, m[..., None], physics,
                      gdt, torch.exp(-drag * dt)[..., None], dt[..., None],
                      dt[..., None] * live, accel, physics_features(physics, self.mc)[:, None].expand(-1, n, -1),
                      torch.where(keep, r[..., None], -inf), torch.where(keep, (self.box - r)[..., None], inf),
                      torch.where(pairs, r[:, :, None] + r[:, None, :], -inf),
                      const(0.0), const(self.box / 2), const(self.mc.vel_scale))

    def forward(self, z: Tensor, action: Tensor, valid: Tensor, static: Tensor, physics: Tensor,
                accel: Tensor | None = None) -> Tensor:
        """One step of latents z (B, N, D) under impulses `action` (B, N, 2)."""
        return self._step(z, action, self.shared(valid, static, physics, accel))

    def rollout(self, z: Tensor, valid: Tensor, static: Tensor, physics: Tensor, accel: Tensor | None,
                actions: Tensor, features: bool = True) -> Tensor:
        """Latents (B, N, D), impulses (B, K, N, 2) -> (B, K, N, D) after each step; with `features`
        False the state part alone, (B, K, N, STATE_DIM), the same numbers as with it."""
        if not features and not torch.is_grad_enabled():
            return self.states(z[..., :STATE_DIM], lambda: z[..., STATE_DIM:], valid, static, physics, accel, actions)
        sh = self.shared(valid, static, physics, accel)
        out = []
        for k in range(actions.shape[1]):
            z = self._step(z, actions[:, k], sh)
            out.append(z)
        z = torch.stack(out, dim=1) if out else z.new_zeros(z.shape[0], 0, *z.shape[1:])
        return z if features else z[..., :STATE_DIM]

    def states(self, s: Tensor, features: Callable[[], Tensor], valid: Tensor, static: Tensor, physics: Tensor,
               accel: Tensor | None, actions: Tensor) -> Tensor:
        """rollout(z, ..., features=False) outside gradient mode: states s (B, N, STATE_DIM) and `features()`,
        the learned part of z (B, N, D - STATE_DIM), called only if a contact needs it.

        `_step`'s arithmetic in the fewest ops: position and velocity kept apart (no slicing), every
        step's impulse divided by the mass in one op, constants as tensors. Free flight never reads
        the learned features: they are brought up to date only when a contact needs them."""
        sh = self.shared(valid, static, physics, accel)
        half, scale = sh.half, sh.scale
        fall = torch.cat([torch.zeros_like(sh.fall), sh.fall], -1)  # vx - 0 is vx, bit for bit
        drift = None if sh.accel is None else sh.accel * sh.dt_live
        sp, sv, h = s[..., 0:2], s[..., 2:STATE_DIM], None
        behind: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]] = []
        ps, vs = [], []
        for kick in (actions / sh.mass[:, None] * sh.live[:, None]).unbind(1):
            vel = sv * scale + kick - fall
            if drift is not None:  # in the simulator's order: after gravity, before drag
                vel = vel + drift
            vel = vel * sh.decay
            pos = (sp * half + half) + vel * sh.dt
            walls = touching = None
            if self._touches(pos, sh):
                h = self._caught_up(features() if h is None else h, behind, sh)
                pos, vel, walls, touching = self._contacts(pos, vel, h, sh)
            sp_new, sv_new = (pos - half) / half, vel / scale
            behind.append((sp, sv, sp_new, sv_new, walls, touching))
            sp, sv = torch.where(sh.keep, sp_new, sp), torch.where(sh.keep, sv_new, sv)
            ps.append(sp)
            vs.append(sv)
        if not ps:
            return s.new_zeros(s.shape[0], 0, *s.shape[1:])
        return torch.cat([torch.stack(ps, 1), torch.stack(vs, 1)], -1)

    def _caught_up(self, h: Tensor, behind: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]],
                   sh: Shared) -> Tensor:
        """The features after the steps in `behind` (emptied), as `_step` would have left them."""
        for sp, sv, sp_new, sv_new, walls, touching in behind:
            s, s_new = torch.cat([sp, sv], -1), torch.cat([sp_new, sv_new], -1)
            walls = s.new_zeros(*s.shape[:-1], 2) if walls is None else walls
            touching = s.new_zeros(*s.shape[:-1], 1) if touching is None else touching
            h = torch.where(sh.keep, self._learn(h, s, s_new, walls, touching, sh), h)
        behind.clear()
        return h

    def _step(self, z: Tensor, action: Tensor, sh: Shared) -> Tensor:
        """The whole latent one step on. Training's gradients go through here: the ops that carry
        one, and their order, are those the shipped model was trained with (its hash is replayed)."""
        s, h = z[..., :STATE_DIM], z[..., STATE_DIM:]
        s_new, walls, touching = self._advance(s, action, sh, lambda: h)
        return torch.where(sh.keep, torch.cat([s_new, self._learn(h, s, s_new, walls, touching, sh)], -1), z)

    def _learn(self, h: Tensor, s: Tensor, s_new: Tensor, walls: Tensor, touching: Tensor, sh: Shared) -> Tensor:
        """The learned features one step on, from the step the state took."""
        return h + self.update(torch.cat([h, s, (s_new - s) * 10, sh.pf, walls, touching], -1))

    def _advance(self, s: Tensor, action: Tensor, sh: Shared, features: Callable[[], Tensor]
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """States (B, N, STATE_DIM) one step on: new states (every row), and which walls (B, N, 2)
        and how many bodies (B, N, 1) each touched. `features()`: the learned features, when needed."""
        mc, box = self.mc, self.box
        x = denormalise(s, box, mc)
        # Free flight: exactly what the physics document prescribes.
        vel = x[..., 2:4] + action / sh.mass * sh.live
        vel = torch.cat([vel[..., 0:1], vel[..., 1:2] - sh.fall], -1)
        if sh.accel is not None:  # in the simulator's order: after gravity, before drag
            vel = vel + sh.accel * sh.dt_live
        vel = vel * sh.decay
        pos = x[..., 0:2] + vel * sh.dt

        if torch.is_grad_enabled() or self._touches(pos, sh):
            # Training always takes this path: its batches touch on almost every step, and the
            # projection's gradient at a body exactly on a wall is not the gradient of no projection.
            pos, vel, walls, touching = self._contacts(pos, vel, features(), sh)
        else:  # nothing touches: walls and pairs would pass every body through, and so would separate()
            walls, touching = pos.new_zeros(pos.shape), pos.new_zeros(*pos.shape[:-1], 1)
        return normalise(torch.cat([pos, vel], -1), box, mc), walls, touching

    def _contacts(self, pos: Tensor, vel: Tensor, h: Tensor, sh: Shared) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Positions and velocities after the free step -> after walls, pairs and the projection into
        the box, and which walls (B, N, 2) and how many bodies (B, N, 1) each body touched."""
        r, m, valid, physics = sh.static[..., 0], sh.static[..., 1], sh.valid, sh.physics
        pos, vel, walls = self._walls(pos, vel, r, h, valid, physics)
        pos, vel, touching = self._pairs(pos, vel, r, m, h, valid, physics)
        pos = self.adapt.kept_apart(pos, separate(pos, r, m, valid, self.box), r, self.box, physics)
        return pos, vel, walls, touching

    def _touches(self, pos: Tensor, sh: Shared) -> bool:
        """Whether any valid body is behind a wall or overlaps another after the free step: the tests
        of `_walls` and `_pairs`, on both axes and all pairs at once."""
        if bool((torch.maximum(sh.low - pos, pos - sh.high) > sh.zero).any()):
            return True
        return pos.shape[1] > 1 and bool((sh.reach - _distances(pos) > sh.zero).any())

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


def _distances(pos: Tensor) -> Tensor:
    """(B, N, N) distances between body centres, as `_pairs` measures them."""
    return (pos[:, None, :, :] - pos[:, :, None, :]).norm(dim=-1).clamp(min=1e-6)


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
