"""Scenario families for the physical evaluation.

A family is a batch of worlds built to exercise one kind of physics: free
flight, a bounce off the floor or a wall, a body resting on the floor, a
head-on or a glancing collision, a crowded box, bodies hugging the walls.
Every world is proposed at its first frame, simulated W-1 steps to give a
consistent context (the present is frame W-1) and then `horizon` steps more
for the true future, all without actions. A world joins the family only if
its true trajectory shows what the family is about: rejection by simulating,
so no family relies on a hand-made guess of what the simulator will do.

The focus body (the one bouncing, resting, colliding...) is always body 0 and
bodies are packed at the front of the N slots, as in training data.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .config import MASS, OBS_DIM, PRESENT, RADIUS, Config
from .simulator import random_worlds, rollout, sample_physics

HORIZON = 20  # true future frames per world
TOUCH = 1e-3  # surface gap (m) that counts as two bodies touching


@dataclass
class Scenario:
    frames: Tensor  # (B, W+H, N, OBS_DIM): W context frames, then the true future
    physics: Tensor  # (B, 4)
    window: int

    @property
    def context(self) -> Tensor:
        return self.frames[:, : self.window]

    @property
    def future(self) -> Tensor:
        return self.frames[:, self.window:]

    @property
    def present(self) -> Tensor:
        """(B, N) bool: real bodies at the present frame."""
        return self.frames[:, self.window - 1, :, PRESENT] > 0

    def __len__(self) -> int:
        return self.frames.shape[0]


Propose = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]  # n -> (first frames, physics)
Accept = Callable[[Tensor, Tensor], Tensor]  # (frames, physics) -> (B,) bool


# ---- what happened in a trajectory ------------------------------------------
def contacts(frames: Tensor, physics: Tensor) -> Tensor:
    """(B, T+1, N, OBS) -> (B, T, N) bool: the body's step t -> t+1 was not the
    free-flight step (gravity, drag, move), i.e. a wall or a body touched it.
    The free step repeats the simulator's own arithmetic, so an untouched body
    matches it to float precision."""
    g, dt = physics[:, 0, None, None], physics[:, 3, None, None]
    decay = torch.exp(-physics[:, 2, None, None] * dt)
    s = frames[:, :-1]
    vel = s[..., 2:4].clone()
    vel[..., 1] = vel[..., 1] - g * dt
    vel = vel * decay[..., None]
    pos = s[..., 0:2] + vel * dt[..., None]
    dev = (pos - frames[:, 1:, :, 0:2]).abs().amax(-1) + (vel - frames[:, 1:, :, 2:4]).abs().amax(-1)
    return (dev > 1e-5) & (s[..., PRESENT] > 0)


def pair_gaps(frames: Tensor) -> Tensor:
    """(B, T, N, OBS) -> (B, T, N, N) surface gaps in metres; inf on the
    diagonal and for padding."""
    d = (frames[..., :, None, 0:2] - frames[..., None, :, 0:2]).norm(dim=-1)
    gap = d - frames[..., :, None, RADIUS] - frames[..., None, :, RADIUS]
    live = frames[..., PRESENT] > 0
    ok = live[..., :, None] & live[..., None, :] & ~torch.eye(frames.shape[2], dtype=torch.bool)
    return torch.where(ok, gap, torch.full_like(gap, float("inf")))


def _first(flags: Tensor) -> Tensor:
    """(B, T) bool -> (B,) index of the first True, T where none."""
    t = flags.shape[1]
    idx = torch.arange(t).expand_as(flags)
    return torch.where(flags, idx, torch.full_like(idx, t)).amin(dim=1)


# ---- proposals ----------------------------------------------------------------
def _worlds(cfg: Config, n: int, gen: torch.Generator, lo: int, hi: int, speed: float | None = None) -> Tensor:
    """(n, max_bodies, OBS) non-overlapping worlds with lo..hi bodies, padded."""
    sim = dataclasses.replace(cfg.sim, min_bodies=lo, max_bodies=hi,
                              speed=cfg.sim.speed if speed is None else speed)
    s = random_worlds(n, sim, gen)
    out = torch.zeros(n, cfg.sim.max_bodies, OBS_DIM)
    out[..., MASS] = 1.0
    out[:, :hi] = s
    return out


def _rand(n: int, gen: torch.Generator, lo: float | Tensor, hi: float | Tensor) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _physics(cfg: Config, n: int, gen: torch.Generator, min_gravity: float | None = None,
             gravity: float | None = None) -> Tensor:
    p = sample_physics(n, cfg.sim.ranges, gen)
    if min_gravity is not None:
        p[:, 0] = _rand(n, gen, min_gravity, cfg.sim.ranges.gravity[1])
    if gravity is not None:
        p[:, 0] = gravity
    return p


def _free_flight(cfg: Config) -> tuple[Propose, Accept]:
    box = cfg.sim.box

    def propose(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        s = _worlds(cfg, n, gen, 1, 3, speed=2.5)
        # Start high so a fall fits in the box: most low starts would hit the floor.
        r = s[..., RADIUS]
        s[..., 1] = torch.where(s[..., PRESENT] > 0, box / 2 + (box / 2 - r) * torch.rand(s.shape[:2], generator=gen),
                                s[..., 1])
        return s, _physics(cfg, n, gen)

    return propose, lambda f, p: ~contacts(f, p).any(dim=(1, 2))


def _bounce(cfg: Config, w: int) -> tuple[Propose, Accept]:
    box = cfg.sim.box

    def propose(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        s = _worlds(cfg, n, gen, 1, 1)
        r = s[:, 0, RADIUS]
        wall = torch.randint(0, 3, (n,), generator=gen)  # 0 floor, 1 left, 2 right
        gap, speed = _rand(n, gen, 0.1, 2.5), _rand(n, gen, 1.5, 5.0)
        along, across = _rand(n, gen, 1.5, box - 1.5), _rand(n, gen, -1.5, 1.5)
        floor, left = wall == 0, wall == 1
        x = torch.where(floor, along, torch.where(left, r + gap, box - r - gap))
        y = torch.where(floor, r + gap, along.clamp(3.0, box - 1.0))
        vx = torch.where(floor, across, torch.where(left, -speed, speed))
        vy = torch.where(floor, -speed, across)
        s[:, 0, 0:4] = torch.stack([x, y, vx, vy], dim=1)
        return s, _physics(cfg, n, gen)

    def accept(f: Tensor, p: Tensor) -> Tensor:
        c = contacts(f, p)[:, :, 0]
        return ~c[:, : w - 1].any(1) & c[:, w - 1:].any(1)  # first touch in the future, not the context

    return propose, accept


def _resting(cfg: Config, band: float = 0.025) -> tuple[Propose, Accept]:
    box = cfg.sim.box

    def propose(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        s = _worlds(cfg, n, gen, 1, 3)
        s[:, 0, 0] = _rand(n, gen, 1.0, box - 1.0)
        s[:, 0, 1] = s[:, 0, RADIUS]
        s[:, 0, 2:4] = 0.0
        return s, _physics(cfg, n, gen, min_gravity=1.0)

    def accept(f: Tensor, p: Tensor) -> Tensor:
        # The simulator's floor contact jitters by about e*g*dt^2 (and with
        # e near 1 and no drag it can pump itself up); keep the worlds where
        # the truth does rest, so the check asks the model what the simulator does.
        y = f[:, :, 0, 1] - f[:, :, 0, RADIUS]
        x = f[:, :, 0, 0] - f[:, :1, 0, 0]
        return (y.abs().amax(1) <= band) & (x.abs().amax(1) <= 1e-4)

    return propose, accept


def _collision(cfg: Config, w: int, horizon: int, glancing: bool) -> tuple[Propose, Accept]:
    box = cfg.sim.box

    def propose(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        s = _worlds(cfg, n, gen, 2, 2)
        p = _physics(cfg, n, gen)
        r0, r1 = s[:, 0, RADIUS], s[:, 1, RADIUS]
        theta = _rand(n, gen, 0.0, 2 * torch.pi)
        u = torch.stack([theta.cos(), theta.sin()], 1)
        perp = torch.stack([-u[:, 1], u[:, 0]], 1)
        v0, v1 = _rand(n, gen, 1.0, 4.0), _rand(n, gen, 1.0, 4.0)
        steps = _rand(n, gen, w + 1.0, w + horizon - 4.0)  # when they should meet
        offset = (r0 + r1) * (_rand(n, gen, 0.3, 0.85) if glancing else torch.zeros(n))
        # Free distance along the line before touching, plus the radii.
        along = (v0 + v1) * p[:, 3] * steps + ((r0 + r1) ** 2 - offset ** 2).sqrt()
        centre = torch.stack([_rand(n, gen, 3.0, box - 3.0), _rand(n, gen, 4.0, box - 2.0)], 1)
        half = along[:, None] / 2 * u
        side = offset[:, None] / 2 * perp
        s[:, 0, 0:2], s[:, 1, 0:2] = centre - half - side, centre + half + side
        s[:, 0, 2:4], s[:, 1, 2:4] = v0[:, None] * u, -v1[:, None] * u
        return s, p

    def accept(f: Tensor, p: Tensor) -> Tensor:
        touch = pair_gaps(f)[:, :, 0, 1] <= TOUCH  # (B, T+1)
        t_pair = _first(touch)
        first_contact = _first(contacts(f, p)[:, :, 0:2].any(-1))  # transition index
        return (t_pair >= w) & (t_pair < f.shape[1]) & (first_contact == t_pair - 1)

    return propose, accept


def _five(cfg: Config) -> tuple[Propose, Accept]:
    def propose(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        k = cfg.sim.max_bodies
        return _worlds(cfg, n, gen, k, k), _physics(cfg, n, gen)

    return propose, lambda f, p: torch.ones(f.shape[0], dtype=torch.bool)


def _near_walls(cfg: Config) -> tuple[Propose, Accept]:
    box = cfg.sim.box

    def propose(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        s = _worlds(cfg, n, gen, 1, 3)
        shape = s.shape[:2]
        r = s[..., RADIUS]
        wall = torch.randint(0, 4, shape, generator=gen)  # floor, ceiling, left, right
        gap = 0.5 * torch.rand(shape, generator=gen)
        along = r + (box - 2 * r) * torch.rand(shape, generator=gen)
        low = r + gap
        high = box - r - gap
        x = torch.where(wall == 2, low, torch.where(wall == 3, high, along))
        y = torch.where(wall == 0, low, torch.where(wall == 1, high, along))
        live = s[..., PRESENT] > 0
        s[..., 0] = torch.where(live, x, s[..., 0])
        s[..., 1] = torch.where(live, y, s[..., 1])
        return s, _physics(cfg, n, gen)

    return propose, lambda f, p: (pair_gaps(f[:, :1]) > 0.05).flatten(1).all(1)  # moved bodies may overlap


def _still(cfg: Config) -> tuple[Propose, Accept]:
    box = cfg.sim.box

    def propose(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        s = _worlds(cfg, n, gen, 1, 3)
        s[:, 0, 0:2] = 1.0 + (box - 2.0) * torch.rand(n, 2, generator=gen)
        s[:, 0, 2:4] = 0.0
        return s, _physics(cfg, n, gen, gravity=0.0)

    def accept(f: Tensor, p: Tensor) -> Tensor:
        return (pair_gaps(f)[:, :, 0].amin(dim=(1, 2)) > 0.2) & ~contacts(f, p)[:, :, 0].any(1)

    return propose, accept


def _isolated(cfg: Config, min_gap: float) -> tuple[Propose, Accept]:
    def propose(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        return _worlds(cfg, n, gen, 2, cfg.sim.max_bodies), _physics(cfg, n, gen)

    return propose, lambda f, p: pair_gaps(f)[:, :, 0].amin(dim=(1, 2)) >= min_gap


# ---- building a family ---------------------------------------------------------
def build(propose: Propose, accept: Accept, n: int, cfg: Config, seed: int, horizon: int = HORIZON,
          rounds: int = 50) -> Scenario:
    """Propose worlds in rounds until n pass `accept` (fewer if the rounds run out)."""
    gen = torch.Generator().manual_seed(seed)
    w, nb = cfg.model.window, cfg.sim.max_bodies
    kept: list[tuple[Tensor, Tensor]] = []
    have = 0
    for _ in range(rounds):
        s0, phys = propose(max(4 * n, 64), gen)
        frames = rollout(s0, phys, torch.zeros(s0.shape[0], w - 1 + horizon, nb, 2), cfg.sim.box)
        ok = accept(frames, phys)
        kept.append((frames[ok], phys[ok]))
        have += int(ok.sum())
        if have >= n:
            break
    frames = torch.cat([k[0] for k in kept])[:n]
    return Scenario(frames, torch.cat([k[1] for k in kept])[:n], w)


FAMILIES = ("free_flight", "floor_wall_bounce", "resting", "head_on", "glancing", "five_bodies", "near_walls")


def families(cfg: Config, n: int, seed: int, horizon: int = HORIZON) -> dict[str, Scenario]:
    """Every family, n worlds each; family i draws from seed + i."""
    w = cfg.model.window
    makers = {"free_flight": _free_flight(cfg), "floor_wall_bounce": _bounce(cfg, w), "resting": _resting(cfg),
              "head_on": _collision(cfg, w, horizon, glancing=False),
              "glancing": _collision(cfg, w, horizon, glancing=True),
              "five_bodies": _five(cfg), "near_walls": _near_walls(cfg)}
    return {name: build(*makers[name], n, cfg, seed + i, horizon) for i, name in enumerate(FAMILIES)}


def still(cfg: Config, n: int, seed: int, horizon: int = HORIZON) -> Scenario:
    """Gravity 0, body 0 at rest away from the walls and never touched."""
    return build(*_still(cfg), n, cfg, seed, horizon)


def isolated(cfg: Config, n: int, seed: int, horizon: int = HORIZON, min_gap: float = 1.0) -> Scenario:
    """Body 0 with 1..N-1 others that never come within `min_gap` of it (surface
    to surface) over the context and the true future."""
    return build(*_isolated(cfg, min_gap), n, cfg, seed, horizon)


def alone(s: Scenario) -> Scenario:
    """The same worlds with every body but body 0 removed. Nothing touched body
    0 in `isolated` worlds, so its trajectory is unchanged."""
    f = s.frames.clone()
    f[:, :, 1:] = 0.0
    f[:, :, 1:, MASS] = 1.0
    return Scenario(f, s.physics, s.window)
