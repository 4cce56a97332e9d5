"""The predictor's adaptation terms (world_model/adapt.py): an old blob loads and predicts exactly
as it did, the unexplained acceleration reads a wind off a body's window, and the terms cannot move
a prediction in a world inside the trained ranges."""
from __future__ import annotations

import pytest
import torch

from bench.learn import unseen_world
from world_model import adapt, shipped
from world_model.checkpoints import from_bytes
from world_model.config import Config
from world_model.inference import WorldModel
from world_model.metrics import jepa_predict
from world_model.model import JEPA
from world_model.scenarios import families
from world_model.simulator import Rollouts, generate, rollout, sample_windows

HORIZON = 12


@pytest.fixture(scope="module")
def model() -> WorldModel:
    return WorldModel.from_bytes(shipped.default_blob(), "cpu")


def _windows(data: Rollouts, cfg: Config, n: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return sample_windows(data, cfg.model.window + HORIZON, n, torch.Generator().manual_seed(7))


def _worlds(cfg: Config) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Out-of-range lossy bounces, an unnamed wind, and the trained distribution (impulses included)."""
    return {"lossy": _windows(unseen_world("lossy", cfg, 8, 40, seed=1), cfg),
            "wind": _windows(unseen_world("wind", cfg, 8, 40, seed=1), cfg),
            "simulator": _windows(generate(16, 40, cfg.sim, seed=99), cfg)}


def test_the_shipped_blob_predates_the_terms_and_loads_with_them_at_zero(model: WorldModel) -> None:
    saved = from_bytes(shipped.default_blob())["jepa"]
    assert not any(k.startswith(adapt.PREFIX) for k in saved), "the shipped blob was saved before adapt.py"
    terms = dict(model.jepa.predictor.adapt.named_parameters())
    assert set(terms) == {"carry", "wall_mix", "pair_mix", "apart_mix"}
    assert not any(bool(p.any()) for p in terms.values())
    assert not any(p.requires_grad for p in terms.values()), "only fine-tuning trains them"
    # untrained terms are left out: the state dict is the one the blob holds, key for key
    again = model.jepa.state_dict()
    assert list(again) == list(saved) and all(torch.equal(again[k], saved[k]) for k in saved)
    full = model.jepa.full_state_dict()  # for weight arithmetic across models: the terms, at zero
    assert set(full) - set(saved) == {adapt.PREFIX + n for n in terms}
    assert not any(bool(full[adapt.PREFIX + n].any()) for n in terms)
    with pytest.raises(RuntimeError, match="Missing key"):  # only the terms are filled in
        JEPA(model.cfg.model, model.cfg.sim.box).load_state_dict(
            {k: v for k, v in saved.items() if not k.startswith("predictor.wall.")})


def test_trained_terms_are_saved_and_load_back(model: WorldModel) -> None:
    cfg = model.cfg
    a = JEPA(cfg.model, cfg.sim.box)
    a.load_state_dict(model.jepa.state_dict())
    with torch.no_grad():
        a.predictor.adapt.wall_mix.fill_(0.5)
    state = a.state_dict()
    assert {k for k in state if k.startswith(adapt.PREFIX)} == {adapt.PREFIX + n for n in
                                                                ("carry", "wall_mix", "pair_mix", "apart_mix")}
    b = JEPA(cfg.model, cfg.sim.box)
    b.load_state_dict(state)
    assert torch.equal(b.predictor.adapt.wall_mix, torch.full((4,), 0.5))
    partial = {k: v for k, v in state.items() if k != adapt.PREFIX + "carry"}  # e.g. an averaged update
    b.load_state_dict(partial)
    assert not b.predictor.adapt.carry.any() and torch.equal(b.predictor.adapt.wall_mix, torch.full((4,), 0.5))


def test_an_old_blob_predicts_bit_for_bit_as_before(model: WorldModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Predictions and surprise energies of the shipped model, its terms at their zero start, equal
    those of the same weights with every term bypassed (the predictor as it was before adapt.py),
    on every kind of world. (Also checked against the code before the change: identical.)"""
    cfg, jepa = model.cfg, model.jepa
    worlds = _worlds(cfg)

    def run() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {k: (jepa_predict(jepa, f, a, p, cfg, HORIZON), jepa.surprise(f, a[:, 1:], p)[0])
                for k, (f, a, p) in worlds.items()}

    with_terms = run()
    monkeypatch.setattr(adapt.Adapt, "carried", lambda self, accel, physics: torch.zeros_like(accel))
    monkeypatch.setattr(adapt.Adapt, "wall_out", lambda self, out, *a: out)
    monkeypatch.setattr(adapt.Adapt, "pair_out", lambda self, out, *a: out)
    monkeypatch.setattr(adapt.Adapt, "kept_apart", lambda self, pos, separated, *a: separated)
    bypassed = run()
    for k in worlds:
        assert torch.equal(with_terms[k][0], bypassed[k][0]), k
        assert torch.equal(with_terms[k][1], bypassed[k][1]), k


def test_the_terms_cannot_move_an_in_range_prediction(model: WorldModel) -> None:
    """With every term switched fully on, the simulator suite's worlds (inside the trained ranges,
    no impulse in the context) predict exactly as the shipped model; a lossy world does not."""
    cfg = model.cfg
    on = JEPA(cfg.model, cfg.sim.box)
    on.load_state_dict(model.jepa.state_dict())
    on.eval()
    with torch.no_grad():
        on.predictor.adapt.wall_mix.fill_(1.0)
        on.predictor.adapt.pair_mix.fill_(1.0)
        on.predictor.adapt.apart_mix.fill_(1.0)
    w = cfg.model.window
    for name, s in families(cfg, 8, seed=5).items():
        actions = torch.zeros(len(s), w - 1 + s.future.shape[1], s.frames.shape[2], 2)
        before = jepa_predict(model.jepa, s.frames, actions, s.physics, cfg, s.future.shape[1])
        after = jepa_predict(on, s.frames, actions, s.physics, cfg, s.future.shape[1])
        assert torch.equal(before, after), name
    f, a, p = _worlds(cfg)["lossy"]
    assert not torch.equal(jepa_predict(model.jepa, f, a, p, cfg, HORIZON), jepa_predict(on, f, a, p, cfg, HORIZON))


def test_the_unexplained_acceleration_is_the_wind_and_zero_without_one(model: WorldModel) -> None:
    cfg = model.cfg
    box = cfg.sim.box
    start = torch.zeros(1, 3, 7)
    start[0, 0] = torch.tensor([3.0, 6.0, 1.0, 0.5, 0.4, 1.0, 1.0])  # in free flight
    start[0, 1] = torch.tensor([7.0, 0.5, -1.0, 0.0, 0.5, 2.0, 1.0])  # sliding along the floor
    start[0, 2] = torch.tensor([1.0, 9.0, 0.0, 0.0, 0.3, 1.0, 0.0])  # padding
    physics = torch.tensor([[9.81, 0.9, 0.2, 0.05]])
    actions = torch.zeros(1, 3, 3, 2)
    windy = rollout(start, physics, actions, box, accel=torch.tensor([[2.0, -1.0]]))
    acc = adapt.unexplained_acceleration(windy[:, 1:3], physics, box)
    assert torch.allclose(acc[0, 0], torch.tensor([2.0, -1.0]), atol=1e-3)
    # on the floor the wall explains the vertical: only the sideways part is read
    assert abs(float(acc[0, 1, 0]) - 2.0) < 1e-3 and float(acc[0, 1, 1]) == 0.0
    assert not acc[0, 2].any()
    calm = rollout(start, physics, actions, box)
    assert float(adapt.unexplained_acceleration(calm[:, 1:3], physics, box).abs().max()) < 1e-3
    hidden = torch.tensor([[0.0, 1.0]])  # the older frame not seen: nothing to read
    assert not adapt.unexplained_acceleration(windy[:, 1:3], physics, box, hidden).any()


def test_the_wind_reaches_the_prediction_only_through_the_learned_gain(model: WorldModel) -> None:
    cfg = model.cfg
    f, a, p = _worlds(cfg)["wind"]
    on = JEPA(cfg.model, cfg.sim.box)
    on.load_state_dict(model.jepa.state_dict())
    on.eval()
    with torch.no_grad():  # a gain of exactly 1 at 2 m/s^2 (level 1 on the log2 bands)
        on.predictor.adapt.carry[:, 0] = 1 / torch.exp(-0.5 * (1.0 - adapt.BANDS) ** 2).sum()
    w = cfg.model.window
    true = f[:, w + HORIZON - 1, :, 0:2]
    present = f[:, w - 1, :, 6] > 0
    err = {name: (jepa_predict(m, f, a, p, cfg, HORIZON)[:, -1, :, 0:2] - true).norm(dim=-1)[present].mean()
           for name, m in (("zero gain", model.jepa), ("gain 1", on))}
    assert float(err["gain 1"]) < 0.5 * float(err["zero gain"]), err
    # nothing above CARRY_MAX is carried, whatever the gain: an impulse inside the window
    big = torch.tensor([[[adapt.CARRY_MAX * 1.01, 0.0], [adapt.CARRY_MAX * 0.99, 0.0]]])
    out = on.predictor.adapt.carried(big, p[:1])
    assert float(out[0, 0].abs().max()) == 0.0 and float(out[0, 1, 0]) > 0.0
