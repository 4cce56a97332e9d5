"""The predictor's state-only rollout (predict, plan) against the whole-latent one (training, surprise).

predictor.py spends ops only where they change a number: a step that touches nothing skips the
contact networks and the projection, and a rollout asked for states runs the learned features'
update (and the encoder's network) only when a contact needs them. These tests hold it to the
same numbers as the full rollout, on every kind of world, and check that the work is skipped
where it can be and done where it must be.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from bench.learn import unseen_world
from world_model import shipped
from world_model.inference import WorldModel
from world_model.model import JEPA, STATE_DIM
from world_model.simulator import Rollouts, generate, sample_windows

HORIZON = 30
PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}


@pytest.fixture(scope="module")
def model() -> WorldModel:
    return WorldModel.from_bytes(shipped.default_blob(), "cpu")


@pytest.fixture(scope="module")
def adapted() -> WorldModel:
    """adapt.py's terms all on (a fine-tuned model): the carried acceleration and the corrections
    below the trained restitution take their paths too."""
    m = WorldModel.from_bytes(shipped.default_blob(), "cpu")
    a = m.jepa.predictor.adapt
    with torch.no_grad():
        a.carry.copy_(torch.linspace(-0.3, 0.4, a.carry.numel()).view_as(a.carry))
        a.wall_mix.fill_(0.5)
        a.pair_mix.fill_(0.4)
        a.apart_mix.fill_(0.3)
    return m


def _windows(data: Rollouts, w: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    frames, actions, physics = sample_windows(data, w + HORIZON, n, torch.Generator().manual_seed(seed))
    return frames[:, :w], actions[:, w - 1:], physics


def _worlds(model: WorldModel) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Training's distribution (impulses, 1 to 5 bodies, so padded rows), lossy bounces below the
    trained restitution, and a wind."""
    cfg, w = model.cfg, model.window
    return {"simulator": _windows(generate(32, 64, cfg.sim, seed=99), w, 64, 1),
            "lossy": _windows(unseen_world("lossy", cfg, 8, 64, seed=1), w, 32, 2),
            "wind": _windows(unseen_world("wind", cfg, 8, 64, seed=1), w, 32, 3)}


def _full(jepa: JEPA, frames: torch.Tensor, physics: torch.Tensor, actions: torch.Tensor,
          visible: torch.Tensor | None = None) -> torch.Tensor:
    """States from the whole-latent rollout, every step through the contact code."""
    with torch.no_grad():
        return jepa.rollout(jepa.encode(frames, physics, visible), physics, actions)[..., :STATE_DIM]


@pytest.mark.parametrize("which", ["model", "adapted"])
def test_states_equal_the_whole_latent_rollout_on_every_kind_of_world(which: str, request: pytest.FixtureRequest
                                                                     ) -> None:
    m: WorldModel = request.getfixturevalue(which)
    jepa = m.jepa
    for name, (frames, actions, physics) in _worlds(m).items():
        if which == "adapted":
            physics = physics.clone()
            physics[::2, 1] = 0.2  # below the trained range: the corrections act
        visible = torch.ones(frames.shape[0], m.window)
        visible[::3, :-1] = 0  # a third of the queries give one frame
        full = _full(jepa, frames, physics, actions, visible)
        with torch.inference_mode():
            states = jepa.predict_states(frames, physics, actions, visible)
            enc = jepa.encode(frames, physics, visible)
            lazy = jepa.rollout(enc, physics, actions, features=False)
            short = jepa.predict_states(frames, physics, actions[:, :0], visible)
        assert torch.equal(states, full), (which, name)
        assert torch.equal(lazy, full), (which, name)
        # One world a query, as a node mostly serves them: a batch takes the shortcut only when no
        # world of it touches anything, one world whenever it touches nothing.
        one = range(0, frames.shape[0], 2)
        with torch.inference_mode():
            alone = torch.cat([jepa.predict_states(frames[i:i + 1], physics[i:i + 1], actions[i:i + 1],
                                                   visible[i:i + 1]) for i in one])
        alone_full = torch.cat([_full(jepa, frames[i:i + 1], physics[i:i + 1], actions[i:i + 1], visible[i:i + 1])
                                for i in one])
        assert torch.equal(alone, alone_full), (which, name)
        assert short.shape == (frames.shape[0], 0, frames.shape[2], STATE_DIM)
        # under gradient mode (training) the same numbers, through the whole step
        assert torch.equal(jepa.predict_states(frames, physics, actions, visible).detach(), full), (which, name)


@contextmanager
def _calls(jepa: JEPA) -> Iterator[dict[str, int]]:
    """How many times each learned part runs."""
    count = {"encoder": 0, "update": 0, "wall": 0, "pair": 0}
    nets = {"encoder": jepa.encoder.net, "update": jepa.predictor.update, "wall": jepa.predictor.wall,
            "pair": jepa.predictor.pair}
    hooks = [net.register_forward_hook(lambda *_, k=k: count.__setitem__(k, count[k] + 1)) for k, net in nets.items()]
    try:
        yield count
    finally:
        for h in hooks:
            h.remove()


def test_free_flight_runs_no_learned_part_and_a_contact_runs_them(model: WorldModel) -> None:
    rows = np.array([[1.0 + i * 1.5, 3.0 + i % 3, 1.0, 0.5 - i * 0.1, 0.3, 1.0] for i in range(4)])
    free = model.prepare_predict(rows, PHYSICS, 10)
    falls = model.prepare_predict(rows, PHYSICS, 40)  # the low bodies reach the floor within 2 s
    for req, touches in ((free, False), (falls, True)):
        args = (req.frames[None], req.physics[None], req.actions[None], req.visible[None])
        with _calls(model.jepa) as count, torch.inference_mode():
            states = model.jepa.predict_states(*args)
        assert torch.equal(states, _full(model.jepa, args[0], args[1], args[2], args[3]))
        if touches:  # the features caught up: once the encoder, every step's update up to the contact
            assert count["encoder"] == 1 and count["wall"] >= 1 and count["update"] >= 1, count
        else:
            assert count == {"encoder": 0, "update": 0, "wall": 0, "pair": 0}
        with _calls(model.jepa) as count:
            model.predict_prepared([req])  # the serving path
        assert (count["update"] > 0) == touches, count


def test_plans_are_searched_with_the_same_numbers(model: WorldModel) -> None:
    """The planner reads states only: a plan equals the one made with whole latents."""
    frames, _, physics = _windows(generate(4, 64, model.cfg.sim, seed=5), model.window, 2, 4)
    goal = torch.tensor([[5.0, 5.0, 1.0]] * 2)
    body = torch.zeros(2, dtype=torch.long)
    fast = model.plan_batch(frames, physics, body, goal, 8, budget=32, seed=3)
    jepa, rollout = model.jepa, model.jepa.rollout
    try:  # the same search, every candidate rolled with its whole latent
        jepa.rollout = lambda enc, p, a, features=True: rollout(enc, p, a)[..., :STATE_DIM]  # type: ignore[method-assign]
        slow = model.plan_batch(frames, physics, body, goal, 8, budget=32, seed=3)
    finally:
        del jepa.rollout
    assert torch.equal(fast.actions, slow.actions) and torch.equal(fast.path, slow.path)
