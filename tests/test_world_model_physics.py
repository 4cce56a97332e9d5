"""What the predictor guarantees by its structure, whatever its training: free flight follows the
physics document exactly, far-away bodies change nothing, no disc leaves the box; and queries
the model cannot answer honestly are refused with a code. One tiny model for the module."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from world_model.config import Physics, tiny_config
from world_model.errors import InvalidGoal, SpeedOutOfRange, StateOutsideBox
from world_model.inference import WorldModel
from world_model.simulator import physics_tensor, random_worlds, rollout
from world_model.train import train

torch.set_num_threads(1)
PHYS = Physics(gravity=9.81, restitution=0.8, drag=0.2, time_step=0.05)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> WorldModel:
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, train_rollouts=128, val_rollouts=64)
    cfg.train = dataclasses.replace(cfg.train, steps=60, checkpoint_dir=str(tmp_path_factory.mktemp("ckpt")))
    res = train(cfg, progress=False)
    return WorldModel.load(res.hash, cfg.train.checkpoint_dir, "cpu")


def free_flight(row: list[float], p: Physics, steps: int) -> np.ndarray:
    """Semi-implicit Euler with gravity and drag, no contact: what the physics document prescribes."""
    x, y, vx, vy = row[:4]
    out = []
    for _ in range(steps):
        vx, vy = vx * np.exp(-p.drag * p.time_step), (vy - p.gravity * p.time_step) * np.exp(-p.drag * p.time_step)
        x, y = x + vx * p.time_step, y + vy * p.time_step
        out.append((x, y))
    return np.array(out)


def test_a_free_body_follows_the_physics_exactly(model: WorldModel) -> None:
    row = [5.0, 8.0, 0.7, 1.0, 0.4, 1.0]  # rises, slows, falls; touches nothing in 15 steps
    p = model.predict([row], PHYS, 15)
    np.testing.assert_allclose(p.positions[:, 0], free_flight(row, PHYS, 15), atol=1e-4)
    assert p.positions[0, 0, 1] < 8.0 + 1.0 * PHYS.time_step  # never more than its own velocity lifts it


def test_at_zero_gravity_a_body_at_rest_stays(model: WorldModel) -> None:
    p = model.predict([[4.0, 6.0, 0.0, 0.0, 0.5, 1.5]], dataclasses.replace(PHYS, gravity=0.0), 20)
    assert np.abs(p.positions[:, 0] - [4.0, 6.0]).max() < 1e-5


def test_bodies_that_never_come_near_change_nothing(model: WorldModel) -> None:
    alone = model.predict([[2.0, 8.0, 1.0, 0.0, 0.4, 1.0]], PHYS, 20).positions[:, 0]
    crowd = [[2.0, 8.0, 1.0, 0.0, 0.4, 1.0], [8.0, 0.5, -0.5, 0.0, 0.5, 2.0], [8.5, 8.5, 0.0, 0.0, 0.3, 0.5]]
    among = model.predict(crowd, PHYS, 20).positions[:, 0]
    np.testing.assert_array_equal(alone, among)


def test_no_prediction_leaves_the_box(model: WorldModel) -> None:
    cfg = model.cfg
    s0 = random_worlds(64, cfg.sim, torch.Generator().manual_seed(3))
    frames = rollout(s0, physics_tensor(PHYS).repeat(64, 1), torch.zeros(64, 1, cfg.sim.max_bodies, 2), cfg.sim.box)
    pred = model.predict_states(frames, physics_tensor(PHYS).repeat(64, 1), torch.zeros(64, 30, cfg.sim.max_bodies, 2))
    r = s0[:, None, :, 4, None]
    present = s0[:, None, :, 6, None] > 0
    inside = (pred[..., 0:2] >= r - 1e-5) & (pred[..., 0:2] <= cfg.sim.box - r + 1e-5)
    assert bool((inside | ~present).all())


@pytest.mark.parametrize("call,exc", [
    (lambda m: m.predict([[11.0, 5.0, 0, 0, 0.5, 1.0]], PHYS, 3), StateOutsideBox),
    (lambda m: m.predict([[5.0, 0.2, 0, 0, 0.5, 1.0]], PHYS, 3), StateOutsideBox),  # sunk into the floor
    (lambda m: m.predict([[5.0, 5.0, 80.0, 0, 0.5, 1.0]], PHYS, 3), SpeedOutOfRange),
    (lambda m: m.predict([[5.0, 5.0, 0, 0, 0.5, 1.0]], PHYS, 2, [[[1e6, 0]], [[0, 0]]]), SpeedOutOfRange),
    (lambda m: m.plan([[5.0, 5.0, 0, 0, 0.5, 1.0]], PHYS, 0, [30.0, 5.0, 1.0], 5, 8), InvalidGoal),
])
def test_queries_outside_the_world_are_refused(model: WorldModel, call, exc) -> None:
    with pytest.raises(exc) as e:
        call(model)
    assert e.value.code in {"state_outside_box", "speed_out_of_range", "invalid_goal"}
