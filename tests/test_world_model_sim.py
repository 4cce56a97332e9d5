"""The simulator: reproducible, physically sane, conserves what it should."""
from __future__ import annotations

import torch

from world_model.config import MASS, PRESENT, Physics, SimConfig
from world_model.simulator import (generate, kinetic_energy, momentum, physics_tensor, random_worlds, rollout,
                                   step)

torch.set_num_threads(1)


def test_generate_is_reproducible_and_seed_dependent():
    cfg = SimConfig()
    a = generate(64, 20, cfg, seed=5)
    b = generate(64, 20, cfg, seed=5)
    c = generate(64, 20, cfg, seed=6)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.actions, b.actions)
    assert torch.equal(a.physics, b.physics)
    assert not torch.equal(a.frames, c.frames)


def test_varied_constants_counts_and_bodies_stay_in_box():
    cfg = SimConfig()
    r = generate(256, 40, cfg, seed=1)
    assert torch.isfinite(r.frames).all()
    counts = r.frames[:, 0, :, PRESENT].sum(-1)
    assert counts.min() >= cfg.min_bodies and counts.max() <= cfg.max_bodies
    assert len(counts.unique()) == cfg.max_bodies - cfg.min_bodies + 1
    for i, (lo, hi) in enumerate([cfg.ranges.gravity, cfg.ranges.restitution, cfg.ranges.drag,
                                  cfg.ranges.time_step]):
        assert lo <= r.physics[:, i].min() and r.physics[:, i].max() <= hi
        assert r.physics[:, i].std() > 0
    live = r.frames[..., PRESENT] > 0
    pos, rad = r.frames[..., 0:2], r.frames[..., 4:5]
    assert ((pos - rad >= -1e-4) & (pos + rad <= cfg.box + 1e-4)).all(-1)[live].all()


def test_energy_conserved_without_gravity_or_drag_at_restitution_one():
    cfg = SimConfig(rest_prob=0.0)  # every world moving: energy relative to its start
    gen = torch.Generator().manual_seed(3)
    s0 = random_worlds(128, cfg, gen)
    phys = physics_tensor(Physics(gravity=0.0, restitution=1.0, drag=0.0, time_step=0.05)).repeat(128, 1)
    frames = rollout(s0, phys, torch.zeros(128, 300, cfg.max_bodies, 2), cfg.box)
    e = torch.stack([kinetic_energy(frames[:, t]) for t in range(frames.shape[1])], 1)
    assert ((e - e[:, :1]).abs() / e[:, :1]).max() < 1e-4
    # and there were collisions: velocities changed direction somewhere
    assert (frames[:, -1, :, 2:4] != frames[:, 0, :, 2:4]).any()


def test_dissipation_with_drag_or_inelastic_bounces():
    cfg = SimConfig(rest_prob=0.0)  # a world of bodies at rest has no energy to lose
    s0 = random_worlds(64, cfg, torch.Generator().manual_seed(4))
    for p in (Physics(0.0, 1.0, 0.3, 0.05), Physics(0.0, 0.6, 0.0, 0.05)):
        frames = rollout(s0, physics_tensor(p).repeat(64, 1), torch.zeros(64, 200, cfg.max_bodies, 2), cfg.box)
        assert (kinetic_energy(frames[:, -1]) < kinetic_energy(frames[:, 0]) - 1e-6).all()


def test_body_collision_conserves_momentum_and_energy():
    # Two bodies approaching head-on in the middle of the box, no walls in reach.
    s = torch.zeros(1, 2, 7)
    s[0, 0, :6] = torch.tensor([4.6, 5.0, 2.0, 0.3, 0.5, 1.0])
    s[0, 1, :6] = torch.tensor([5.5, 5.1, -1.0, 0.0, 0.5, 2.5])
    s[..., PRESENT] = 1.0
    phys = physics_tensor(Physics(0.0, 1.0, 0.0, 0.05))
    nxt = step(s, phys, None, 10.0)
    assert not torch.allclose(nxt[..., 2:4], s[..., 2:4])  # they did collide
    assert torch.allclose(momentum(nxt), momentum(s), atol=1e-5)
    assert torch.allclose(kinetic_energy(nxt), kinetic_energy(s), rtol=1e-5)


def test_impulse_changes_velocity_by_impulse_over_mass():
    s = torch.zeros(1, 1, 7)
    s[0, 0, :6] = torch.tensor([5.0, 5.0, 0.0, 0.0, 0.5, 2.0])
    s[..., PRESENT] = 1.0
    phys = physics_tensor(Physics(0.0, 1.0, 0.0, 0.05))
    nxt = step(s, phys, torch.tensor([[[1.0, -0.5]]]), 10.0)
    assert torch.allclose(nxt[0, 0, 2:4], torch.tensor([0.5, -0.25]))
    assert s[0, 0, MASS] == 2.0


def test_padding_bodies_never_move():
    cfg = SimConfig(min_bodies=1, max_bodies=5)
    r = generate(32, 10, cfg, seed=2)
    pad = r.frames[:, 0, :, PRESENT] == 0
    assert pad.any()
    assert (r.frames[:, :, :, 0:4][pad[:, None].expand(-1, 11, -1)] == 0).all()


def test_some_bodies_start_at_rest_on_the_floor():
    """Training data rich in resting contact, the case a learned contact response gets wrong first."""
    cfg = SimConfig()
    s0 = random_worlds(512, cfg, torch.Generator().manual_seed(5))
    live = s0[..., 6] > 0
    on_floor = live & (s0[..., 1] == s0[..., 4]) & (s0[..., 3] == 0)
    share = float(on_floor.sum() / live.sum())
    assert 0.5 * cfg.rest_prob < share < 2 * cfg.rest_prob
    assert bool((on_floor & (s0[..., 2] == 0)).any()) and bool((on_floor & (s0[..., 2] != 0)).any())
