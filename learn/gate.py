"""The gate a candidate passes before it may replace the serving model.

Two questions, each with a stated bound:
  the world   position error at `horizon` steps on a held-out slice of the world's own
              trajectories must fall by at least `min_improvement` (0.2: to <= 0.8x the base's);
  the suite   the simulator evaluation's rollout figures (world_model/evaluate.py, section
              "rollout", every scenario family, its own held-out seeds) at the same horizon may
              grow by at most `max_suite_regression` (0.1: to <= 1.1x the base's).
The held-out slice is cut by trajectory (whole samples, or whole groups when the caller names
them), never by window, so no held-out frame was trained on. The gate only measures and says
yes or no; it changes nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Hashable, Sequence

import torch

from world_model.baselines import constant_velocity
from world_model.config import PRESENT, Config
from world_model.evaluate import evaluate
from world_model.inference import WorldModel
from world_model.metrics import HORIZONS, jepa_predict
from world_model.model import JEPA
from world_model.simulator import Rollouts, sample_windows


@dataclass(frozen=True)
class GateConfig:
    horizon: int = 10
    min_improvement: float = 0.2  # world error after <= (1 - this) x before
    max_suite_regression: float = 0.1  # suite error after <= (1 + this) x before
    windows: int = 256  # held-out windows the world's error is measured on
    suite_cases: int = 32  # worlds per scenario family (evaluate's default is 64)
    seed: int = 1234


@dataclass
class Verdict:
    accept: bool
    reasons: list[str]
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _subset(data: Rollouts, idx: torch.Tensor) -> Rollouts:
    return Rollouts(data.frames[idx], data.actions[idx], data.physics[idx])


def split(world: Rollouts, heldout_fraction: float = 0.25, seed: int = 0,
          groups: Sequence[Hashable] | None = None) -> tuple[Rollouts, Rollouts]:
    """(train, held-out) by whole trajectories: `groups` names the trajectory (or entity) of each
    sample, and a group goes to one side only; without it every sample is its own group. At least
    one group lands on each side when there are two or more."""
    r = world.frames.shape[0]
    keys = list(range(r)) if groups is None else list(groups)
    if len(keys) != r:
        raise ValueError(f"groups names {len(keys)} samples; the world has {r}")
    unique = list(dict.fromkeys(keys))
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    n_out = min(max(1, round(len(unique) * heldout_fraction)), len(unique) - 1) if len(unique) > 1 else 0
    held = {unique[i] for i in order[:n_out]}
    out_idx = torch.tensor([i for i, k in enumerate(keys) if k in held], dtype=torch.long)
    in_idx = torch.tensor([i for i, k in enumerate(keys) if k not in held], dtype=torch.long)
    return _subset(world, in_idx), _subset(world, out_idx)


def horizons_for(data: Rollouts, window: int) -> tuple[int, ...]:
    """The evaluation horizons the samples are long enough for."""
    return tuple(h for h in HORIZONS if window + h <= data.frames.shape[1])


@torch.no_grad()
def world_errors(jepa: JEPA, cfg: Config, data: Rollouts, windows: int = 256, seed: int = 1234
                 ) -> dict[str, dict[str, float]]:
    """Mean position error (m) of present bodies at each horizon the samples allow, for the model
    and for constant velocity, on the same seeded windows of `data`."""
    w = cfg.model.window
    hs = horizons_for(data, w)
    if not hs or data.frames.shape[0] == 0:
        raise ValueError(f"held-out samples of {data.frames.shape[1]} frames are too short for horizon "
                         f"{HORIZONS[0]} after a {w}-frame window")
    frames, actions, physics = sample_windows(data, w + max(hs), windows, torch.Generator().manual_seed(seed))
    pred = jepa_predict(jepa, frames, actions, physics, cfg, max(hs))[..., 0:2]
    cv = constant_velocity(frames[:, w - 1], physics, max(hs))
    true, mask = frames[:, w:, :, 0:2], frames[:, w - 1, :, PRESENT] > 0
    out: dict[str, dict[str, float]] = {"model": {}, "constant_velocity": {}}
    for h in hs:
        out["model"][str(h)] = float((pred[:, h - 1] - true[:, h - 1]).norm(dim=-1)[mask].mean())
        out["constant_velocity"][str(h)] = float((cv[:, h - 1] - true[:, h - 1]).norm(dim=-1)[mask].mean())
    return out


def suite_errors(model: WorldModel, suite_cfg: Config, cases: int, seed: int) -> dict[str, float]:
    """evaluate()'s rollout section (every family, no MLP baseline): the model's mean position
    error per horizon. Scenarios are built from `suite_cfg` (the base model's config), so a
    candidate whose ranges were widened is measured on the very same worlds as its parent."""
    model.cfg = suite_cfg
    res = evaluate(model, seed=seed, cases=cases, mlp_steps=0, sections=("rollout",), progress=False)
    return {h: float(v) for h, v in res["rollout"]["overall"]["model"].items()}


def _ratio(after: float, before: float) -> float:
    return after / before if before > 0 else (1.0 if after == before else math.inf)


def gate(base_blob: bytes, candidate_blob: bytes, heldout: Rollouts, gc: GateConfig = GateConfig()) -> Verdict:
    """Measure base and candidate on the world's held-out slice and on the suite; say yes or no."""
    base, cand = WorldModel.from_bytes(base_blob, "cpu"), WorldModel.from_bytes(candidate_blob, "cpu")
    h = str(gc.horizon)
    world_before = world_errors(base.jepa, base.cfg, heldout, gc.windows, gc.seed)
    world_after = world_errors(cand.jepa, cand.cfg, heldout, gc.windows, gc.seed)
    if h not in world_before["model"]:
        raise ValueError(f"held-out samples are too short for the gate's horizon {gc.horizon}")
    suite_cfg = base.cfg
    suite_before = suite_errors(base, suite_cfg, gc.suite_cases, gc.seed)
    suite_after = suite_errors(cand, suite_cfg, gc.suite_cases, gc.seed)
    world_ratio = _ratio(world_after["model"][h], world_before["model"][h])
    suite_ratio = _ratio(suite_after[h], suite_before[h])
    reasons = []
    if not world_ratio <= 1 - gc.min_improvement:
        reasons.append(f"world error at {h} steps is {world_ratio:.3f}x the serving model's; "
                       f"the gate asks <= {1 - gc.min_improvement:.3f}x")
    if not suite_ratio <= 1 + gc.max_suite_regression:
        reasons.append(f"suite error at {h} steps is {suite_ratio:.3f}x the serving model's; "
                       f"the gate allows <= {1 + gc.max_suite_regression:.3f}x")
    figures = {
        "horizon": gc.horizon, "min_improvement": gc.min_improvement,
        "max_suite_regression": gc.max_suite_regression,
        "world": {"heldout_samples": int(heldout.frames.shape[0]), "windows": gc.windows,
                  "before": world_before["model"], "after": world_after["model"],
                  "constant_velocity": world_before["constant_velocity"], "ratio": world_ratio},
        "suite": {"cases_per_family": gc.suite_cases, "seed": gc.seed, "before": suite_before,
                  "after": suite_after, "ratio": suite_ratio},
    }
    return Verdict(not reasons, reasons, figures)
