"""The serving API: answers, named errors for bad input, and micro-batching
that returns the same answers as one-by-one calls."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.launcher import Deployment, Topology, wait_until
from service.config import Settings
from tests.conftest import auth_headers
from world_model.batching import MicroBatcher
from world_model.checkpoints import CheckpointStore
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
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """A model's manifest and the checkpoint directory holding its blob."""
    # Answers only need to be well-formed here, so a very short run will do.
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, train_rollouts=128, val_rollouts=64)
    cfg.train = dataclasses.replace(cfg.train, steps=20,
                                    checkpoint_dir=str(tmp_path_factory.mktemp("ckpt")))
    res = train(cfg, progress=False)
    return res.manifest, cfg.train.checkpoint_dir


@pytest.fixture(scope="module")
def model(trained: tuple[dict, str]) -> WorldModel:
    manifest, checkpoint_dir = trained
    return WorldModel.load(manifest["hash"], checkpoint_dir, "cpu")


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


class GatedModel:
    """The model, with every forward pass held at a gate until the test opens it: what is queued
    while a pass runs is then certain, however fast or slow the machine."""

    def __init__(self, model: WorldModel) -> None:
        self.model = model
        self.started = threading.Event()  # set when a forward pass begins
        self.gate = threading.Event()
        self.passes: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def predict_prepared(self, reqs):
        self.passes.append(len(reqs))
        self.started.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.model.predict_prepared(reqs)


def test_lone_query_runs_at_once_and_arrivals_during_a_pass_form_the_next_batch(model):
    queries = [(world(1 + i % 4, 200 + i), PHYS, 1 + i % 9) for i in range(9)]
    alone = [model.predict(*q) for q in queries]
    gated = GatedModel(model)

    # Neither a batcher nor a node waits for company unless told to: the cost falls on a lone query.
    assert MicroBatcher(model).max_wait == 0 and Settings().predict_max_wait_ms == 0

    async def go():
        loop = asyncio.get_running_loop()
        async with MicroBatcher(gated, max_batch_size=8) as mb:
            first = asyncio.ensure_future(mb.predict(*queries[0]))
            # Nothing else is queued: the lone query's pass starts without company. A batcher that
            # waited for company (for max_batch_size queries, or a deadline) would not start it.
            assert await loop.run_in_executor(None, gated.started.wait, 60), "a lone query waited for company"
            rest = [asyncio.ensure_future(mb.predict(*q)) for q in queries[1:]]
            await asyncio.sleep(0)  # they queue while the first pass is held
            gated.gate.set()
            return await asyncio.gather(first, *rest), mb.stats

    batched, stats = asyncio.run(go())
    assert gated.passes == [1, 8]  # the lone query alone, then the 8 that queued during its pass
    assert stats.sizes == {1: 1, 8: 1} and stats.largest_batch == 8
    for a, b in zip(alone, batched):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)
        np.testing.assert_allclose(a.velocities, b.velocities, atol=1e-4)


def test_batcher_takes_what_is_queued_up_to_max_batch_size(model):
    queries = [(world(2, 300 + i), PHYS, 4) for i in range(8)]

    async def go():
        # A wait for company of a minute: both batches fill up at once, and a batcher that ignored
        # max_batch_size or waited out the deadline anyway would run into the test timeout.
        async with MicroBatcher(model, max_batch_size=4, max_wait_ms=60_000) as mb:
            await asyncio.gather(*(mb.predict(*q) for q in queries))
            return mb.stats

    stats = asyncio.run(go())
    assert stats.sizes == {4: 2} and stats.queries == 8


def test_other_model_work_runs_on_the_batchers_thread(model):
    async def go():
        async with MicroBatcher(model) as mb:
            name = await mb.call(lambda: threading.current_thread().name)
            await mb.predict(world(2, 7), PHYS, 3)
            plan = await mb.call(model.plan, world(2, 7), PHYS, 0, (5.0, 5.0, 1.0), 6, 64)
            return name, plan, mb.stats

    name, plan, stats = asyncio.run(go())
    assert name.startswith("wm-batch") and plan.actions.shape == (6, 2) and stats.calls == 2


def test_set_torch_threads_applies_the_count() -> None:
    # A fresh interpreter: the count is per process, and this one already set its own.
    code = ("import torch; from world_model.batching import set_torch_threads; "
            "print(set_torch_threads(1), torch.get_num_threads(), torch.get_num_interop_threads(), "
            "set_torch_threads(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    # 0: one per CPU; the inter-op pool keeps the size it was first given
    assert out == ["1", "1", "1", str(len(os.sched_getaffinity(0)))]


def _get(url: str, headers: dict[str, str]) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return json.loads(r.read())


def test_node_applies_its_torch_threads_setting(trained, tmp_path) -> None:
    manifest, checkpoint_dir = trained
    threads = 3  # neither the node's default (1) nor, here, torch's own (one per CPU)
    topo = Topology(etcd_members=1, regions=1, run_dir=tmp_path,
                    api_env={"WORLDSTATE_DEVICE": "cpu", "WORLDSTATE_TORCH_THREADS": str(threads)})
    with Deployment(topo) as d:
        blob = CheckpointStore(checkpoint_dir).get_bytes(manifest["hash"])
        CheckpointStore(d.run_dir / "checkpoints").put_bytes(blob)
        url, key = d.api["r1"].url, auth_headers(d)
        assert _get(f"{url}/v1/models/current", key)["torch_threads"] is None  # applied with the first model
        req = urllib.request.Request(f"{url}/v1/models/manifest", json.dumps(manifest, default=float).encode(),
                                     {"Content-Type": "application/json", "If-None-Match": "*", **key}, method="PUT")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
        assert wait_until(lambda: _get(f"{url}/v1/models/current", key).get("hash") == manifest["hash"], 60)
        assert _get(f"{url}/v1/models/current", key)["torch_threads"] == threads
