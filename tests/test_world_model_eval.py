"""`worldstate eval` checks a world model against the simulator.

The evaluation is tested on models whose right answers are known: the
simulator posing as a model (zero error, no violation, plans that come true),
constant velocity posing as a model (ratio 1 against itself, walks through
walls), and models lifted 0.5 m (every falling body rises). A tiny trained
model runs every section once for the shape of the report.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor

from world_model import checks
from world_model.baselines import constant_velocity
from world_model.config import Config, tiny_config
from world_model.evaluate import SECTIONS, evaluate, format_table
from world_model.events import KINDS
from world_model.inference import WorldModel
from world_model.planner import PlanResult, SimDynamics, cem
from world_model.report import for_json, plot
from world_model.scenarios import FAMILIES, families, isolated
from world_model.simulator import rollout
from world_model.train import train

torch.set_num_threads(1)
SMALL = dict(cases=8, surprise_cases=16, episodes=4, budget=32, plan_steps=10, progress=False)


class Oracle:
    """The simulator posing as a world model: what a perfect model answers."""

    def __init__(self, cfg: Config):
        self.cfg, self.window, self.device, self.hash = cfg, cfg.model.window, torch.device("cpu"), "oracle"

    def predict_states(self, frames: Tensor, physics: Tensor, actions: Tensor, visible: Tensor | None = None) -> Tensor:
        return rollout(frames[:, -1], physics, actions, self.cfg.sim.box)[:, 1:, :, 0:4]

    def surprise_scores(self, frames: Tensor, actions: Tensor, physics: Tensor) -> Tensor:
        return torch.zeros(frames.shape[0])  # no opinion: every event looks normal

    def threshold(self, k: int) -> float:
        return 0.0

    def dynamics(self) -> SimDynamics:
        return SimDynamics(self.cfg)

    def plan_batch(self, window: Tensor, physics: Tensor, body: Tensor, goal: Tensor, horizon: int,
                   budget: int = 256, seed: int = 0) -> PlanResult:
        dyn = self.dynamics()
        return cem(dyn, dyn.prepare(window, physics, body), goal, horizon, budget, self.cfg.sim.action_max,
                   torch.Generator().manual_seed(seed))


class ConstantVelocity(Oracle):
    def predict_states(self, frames: Tensor, physics: Tensor, actions: Tensor, visible: Tensor | None = None) -> Tensor:
        now = frames[:, -1]
        pos = constant_velocity(now, physics, actions.shape[1])
        return torch.cat([pos, now[:, None, :, 2:4].expand_as(pos)], dim=-1)


class Lifted:
    """Any model, with every predicted body 0.5 m higher than it says."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def predict_states(self, frames: Tensor, physics: Tensor, actions: Tensor, visible: Tensor | None = None) -> Tensor:
        out = self.inner.predict_states(frames, physics, actions, visible).clone()
        out[..., 1] += 0.5
        return out


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> WorldModel:
    cfg = tiny_config()
    cfg.train.steps = 60  # the report's shape, not the model's quality, is under test
    cfg.train.checkpoint_dir = str(tmp_path_factory.mktemp("ckpt"))
    res = train(cfg, progress=False)
    return WorldModel.load(res.hash, cfg.train.checkpoint_dir, "cpu")


def _finite(x) -> bool:
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(_finite(v) for v in x)
    return not isinstance(x, float) or math.isfinite(x)


def test_every_section_and_target_is_reported(model: WorldModel, tmp_path) -> None:
    res = evaluate(model, mlp_steps=20, **SMALL)
    assert set(SECTIONS) <= set(res)
    assert set(res["rollout"]["families"]) == set(FAMILIES)
    for row in res["rollout"]["families"].values():
        assert set(row) >= {"model", "constant_velocity", "supervised_mlp", "ratio_vs_cv", "ratio_vs_mlp"}
        assert set(row["model"]) == {"1", "5", "10", "20"}
    assert set(res["plausibility"]) == {"rises_in_free_fall", "drift_at_rest", "floor_rest", "wall_sinking",
                                        "interpenetration"}
    expected = ({f"model_le_cv.{f}" for f in FAMILIES}
                | {"overall@10.vs_cv", "overall@10.vs_mlp", "collisions@10.vs_cv", "invariance.max_m",
                   "surprise.false_alarm_rate", "planning.mpc_success", "planning.open_loop_agreement"}
                | {f"plausibility.{k}" for k in res["plausibility"]}
                | {f"surprise.{m}.{k}" for k in KINDS for m in ("auroc", "detection")})
    assert set(res["targets"]) == expected
    for v in res["targets"].values():
        assert isinstance(v["pass"], bool) and math.isfinite(v["value"]), v
    assert res["all_pass"] == all(v["pass"] for v in res["targets"].values())
    for sec in ("rollout", "plausibility", "invariance", "planning"):
        assert _finite(res[sec]), sec
    assert _finite({k: v for k, v in res["surprise"].items() if k != "threshold"})
    table = format_table(res)
    for name, v in res["targets"].items():
        assert f"{'PASS' if v['pass'] else 'FAIL'}  {name}" in table
    doc = json.loads(json.dumps(for_json(res), allow_nan=False))
    assert "scores" not in doc["surprise"] and doc["targets"].keys() == res["targets"].keys()
    assert format_table(doc) == table  # the table reads the JSON back the same
    plot(res, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").stat().st_size > 10_000


def test_the_simulator_passes_every_physical_check() -> None:
    oracle = Oracle(tiny_config())
    res = evaluate(oracle, mlp_steps=0, **SMALL)
    for row in res["rollout"]["families"].values():
        assert all(v < 1e-5 for v in row["model"].values()), row
    assert all(v["rate"] == 0 and v["cases"] > 0 for v in res["plausibility"].values()), res["plausibility"]
    assert res["invariance"]["cases"] == SMALL["cases"] and res["invariance"]["max_m"] < 1e-5
    o = res["planning"]["open_loop"]
    assert o["agreement"] == 1.0  # a plan made with the true dynamics comes true
    assert o["predicted_distance_median_m"] == pytest.approx(o["true_distance_median_m"], abs=1e-4)
    # The targets fail where the oracle has no skill: it never flags a surprise.
    s = res["surprise"]
    assert all(s["auroc"][k] == 0.5 and s["detection_rate"][k] == 0.0 for k in KINDS)
    assert not res["targets"]["surprise.auroc.teleport"]["pass"] and not res["all_pass"]


def test_lifting_predictions_fails_the_falling_resting_and_wall_checks(model: WorldModel) -> None:
    res = evaluate(Lifted(Oracle(tiny_config())), mlp_steps=0, sections=("plausibility",), **SMALL)
    p = res["plausibility"]
    assert p["rises_in_free_fall"]["rate"] == 1.0 and p["floor_rest"]["rate"] == 1.0
    assert p["wall_sinking"]["per_family"]["near_walls"] > 0  # bodies under the ceiling go through it
    for name in ("rises_in_free_fall", "floor_rest", "wall_sinking"):
        assert not res["targets"][f"plausibility.{name}"]["pass"]
    lifted = evaluate(Lifted(model), mlp_steps=0, sections=("plausibility",), **SMALL)["plausibility"]
    assert lifted["rises_in_free_fall"]["rate"] > 0 and lifted["floor_rest"]["rate"] > 0


def test_constant_velocity_scores_one_against_itself_and_walks_through_walls() -> None:
    res = evaluate(ConstantVelocity(tiny_config()), mlp_steps=0, sections=("rollout", "plausibility"), **SMALL)
    for row in res["rollout"]["families"].values():
        assert row["model"] == row["constant_velocity"]
        assert all(r == 1.0 for r in row["ratio_vs_cv"].values())
    assert res["targets"]["model_le_cv.head_on"]["pass"]  # <= 1 holds with equality
    assert not res["targets"]["overall@10.vs_cv"]["pass"]
    p = res["plausibility"]
    assert p["wall_sinking"]["rate"] > 0 and p["interpenetration"]["per_family"]["head_on"] > 0


def test_invariance_sees_a_model_that_feels_far_bodies() -> None:
    cfg = tiny_config()
    iso = isolated(cfg, 16, seed=5)
    assert (iso.present.sum(1) >= 2).all()

    def crowd_pushes(s):  # body 0 drifts 1 cm right per other body: not physics
        out = Oracle(cfg).predict_states(s.context, s.physics, torch.zeros(len(s), 20, s.frames.shape[2], 2))
        out[:, :, 0, 0] += 0.01 * (s.present.sum(1, keepdim=True) - 1)
        return out

    assert checks.invariance(iso, crowd_pushes)["max_m"] >= 0.01
    exact = checks.invariance(iso, lambda s: Oracle(cfg).predict_states(
        s.context, s.physics, torch.zeros(len(s), 20, s.frames.shape[2], 2)))
    assert exact["max_m"] < 1e-6


def test_families_show_what_they_are_named_for() -> None:
    from world_model.scenarios import contacts, pair_gaps

    cfg = tiny_config()
    w = cfg.model.window
    fams = families(cfg, 16, seed=77)
    assert all(len(s) == 16 for s in fams.values())
    f = fams["free_flight"]
    assert not contacts(f.frames, f.physics).any()
    b = fams["floor_wall_bounce"]
    c = contacts(b.frames, b.physics)[:, :, 0]
    assert not c[:, : w - 1].any() and c[:, w - 1:].any(1).all()
    for name in ("head_on", "glancing"):
        s = fams[name]
        assert (s.present.sum(1) == 2).all()
        assert (pair_gaps(s.future)[:, :, 0, 1] <= 1e-3).any(1).all(), name
        assert (pair_gaps(s.context)[:, :, 0, 1] > 1e-3).all(), name
    r = fams["resting"]
    assert (r.physics[:, 0] > 0).all() and ((r.frames[:, 0, 0, 1] - r.frames[:, 0, 0, 4]).abs() < 1e-6).all()
    assert (fams["five_bodies"].present.sum(1) == cfg.sim.max_bodies).all()
    again = families(cfg, 16, seed=77)
    assert all(torch.equal(again[k].frames, fams[k].frames) for k in fams)  # held-out seeds replay exactly
