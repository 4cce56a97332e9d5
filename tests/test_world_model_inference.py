"""The serving API: answers, named errors for bad input, and micro-batching
that returns the same answers as one-by-one calls."""
from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
import torch

from world_model.batching import MicroBatcher
from world_model.config import Physics, tiny_config
from world_model.errors import (BadShape, BatcherClosed, HorizonOutOfRange, InvalidBudget, InvalidGoal,
                                InvalidInput, InvalidState, NonFiniteInput, PhysicsOutOfRange, TooManyEntities,
                                UnknownEntity)
from world_model.inference import WorldModel
from world_model.state import MAX_ENTITIES
from world_model.train import train

torch.set_num_threads(1)
PHYS = Physics(gravity=9.81, restitution=0.9, drag=0.1, time_step=0.05)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> WorldModel:
    # Answers only need to be well-formed here, so a very short run will do.
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, train_rollouts=128, val_rollouts=64)
    cfg.train = dataclasses.replace(cfg.train, steps=20, probe_steps=20, probe_windows=128,
                                    checkpoint_dir=str(tmp_path_factory.mktemp("ckpt")))
    res = train(cfg, progress=False)
    return WorldModel.load(res.hash, cfg.train.checkpoint_dir, "cpu")


def world(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.zeros((n, 6))
    s[:, 0:2] = rng.uniform(1, 9, (n, 2))
    s[:, 2:4] = rng.uniform(-3, 3, (n, 2))
    s[:, 4] = rng.uniform(0.3, 0.6, n)
    s[:, 5] = rng.uniform(0.5, 2.0, n)
    return s


def test_predict_shapes_and_window_forms(model):
    s = world(3, 0)
    p = model.predict(s, PHYS, 7)
    assert p.positions.shape == (7, 3, 2) and p.velocities.shape == (7, 3, 2)
    assert np.isfinite(p.positions).all()
    two = np.stack([s, s])  # a (W, N, 6) window is accepted too
    assert model.predict(two, {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05},
                         3).positions.shape == (3, 3, 2)
    acts = np.zeros((7, 3, 2))
    acts[0, 1] = [2.0, 0.0]
    assert model.predict(s, PHYS, 7, actions=acts).positions.shape == (7, 3, 2)
    d = p.to_dict()
    assert len(d["positions"]) == 7


@pytest.mark.parametrize("call, exc", [
    (lambda m: m.predict(world(2, 1), PHYS, m.max_horizon + 1), HorizonOutOfRange),
    (lambda m: m.predict(world(2, 1), PHYS, 0), HorizonOutOfRange),
    (lambda m: m.predict(np.full((2, 6), np.nan), PHYS, 3), NonFiniteInput),
    (lambda m: m.predict(np.array([[1, 2, 3, 4, 0.5, np.inf]]), PHYS, 3), NonFiniteInput),
    (lambda m: m.predict(np.zeros((2, 5)), PHYS, 3), BadShape),
    (lambda m: m.predict(np.zeros((5, 2, 6)), PHYS, 3), BadShape),
    (lambda m: m.predict(world(MAX_ENTITIES + 1, 1), PHYS, 3), TooManyEntities),
    (lambda m: m.predict([[1, 1, 0, 0, -0.5, 1]], PHYS, 3), InvalidState),
    (lambda m: m.predict(world(2, 1), Physics(gravity=100.0), 3), PhysicsOutOfRange),
    (lambda m: m.predict(world(2, 1), {"gravity": float("nan"), "restitution": 1, "drag": 0,
                                       "time_step": 0.05}, 3), NonFiniteInput),
    (lambda m: m.predict(world(2, 1), {"gravity": 9.8}, 3), BadShape),
    (lambda m: m.predict(world(2, 1), PHYS, 3, actions=np.zeros((3, 5, 2))), BadShape),
    (lambda m: m.plan(world(2, 1), PHYS, 2, (5, 5, 1), 10), UnknownEntity),
    (lambda m: m.plan(world(2, 1), PHYS, -1, (5, 5, 1), 10), UnknownEntity),
    (lambda m: m.plan(world(2, 1), PHYS, 0, (5, 5, -1), 10), InvalidGoal),
    (lambda m: m.plan(world(2, 1), PHYS, 0, (5, 5, 1), 10, budget=1), InvalidBudget),
    (lambda m: m.surprise(world(2, 1), np.zeros((3, 4, 6)), PHYS), BadShape),
])
def test_bad_input_raises_named_errors(model, call, exc):
    with pytest.raises(exc) as info:
        call(model)
    assert isinstance(info.value, InvalidInput) and isinstance(info.value, ValueError)
    assert info.value.code


def test_surprise_and_plan_answers(model):
    s = world(2, 3)
    obs = np.stack([s] * 4)
    present = np.ones((4, 2), dtype=bool)
    present[2:, 1] = False
    r = model.surprise(s, obs, PHYS, observed_present=present)
    assert r.per_step.shape == (4, 2) and np.isfinite(r.score) and 0 <= r.entity < 2
    assert isinstance(r.surprising, bool)
    plan = model.plan(s, PHYS, 0, {"x": 5.0, "y": 5.0, "radius": 1.0}, horizon=8, budget=64)
    assert plan.actions.shape == (8, 2) and plan.predicted_path.shape == (8, 2)
    assert np.abs(plan.actions).max() <= model.cfg.sim.action_max + 1e-6
    assert plan.to_dict()["reaches_goal"] in (True, False)


def test_batched_answers_equal_one_by_one(model):
    rng = np.random.default_rng(0)
    queries = []
    for i in range(24):
        n = int(rng.integers(1, 6))
        s = world(n, 100 + i)
        if i % 3 == 0:
            s = np.stack([s - 0.05, s])  # some queries carry two frames
        horizon = int(rng.integers(1, 15))
        phys = Physics(gravity=float(rng.uniform(0, 15)), restitution=0.9, drag=0.1, time_step=0.05)
        acts = rng.uniform(-1, 1, (horizon, n, 2)) if i % 4 == 0 else None
        queries.append((s, phys, horizon, acts))
    alone = [model.predict(*q) for q in queries]

    async def together():
        async with MicroBatcher(model, max_batch_size=8, max_wait_ms=20) as mb:
            out = await asyncio.gather(*(mb.predict(*q) for q in queries))
            return out, mb.stats

    batched, stats = asyncio.run(together())
    assert stats.batches < len(queries) and stats.largest_batch > 1  # really merged
    for a, b in zip(alone, batched):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)
        np.testing.assert_allclose(a.velocities, b.velocities, atol=1e-4)


def test_batcher_rejects_bad_input_alone_and_closes(model):
    async def go():
        mb = MicroBatcher(model, max_batch_size=4, max_wait_ms=5)
        good = mb.predict(world(2, 5), PHYS, 3)
        bad = mb.predict(world(2, 5), PHYS, model.max_horizon + 5)
        res = await asyncio.gather(good, bad, return_exceptions=True)
        await mb.close()
        with pytest.raises(BatcherClosed):
            await mb.predict(world(2, 5), PHYS, 3)
        return res

    good, bad = asyncio.run(go())
    assert good.positions.shape == (3, 2, 2)
    assert isinstance(bad, HorizonOutOfRange)
