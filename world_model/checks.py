"""Physical plausibility and invariance of a world model's predictions.

Each plausibility check counts cases and violations; its rate is violations /
cases and a physically sound model scores 0 (the simulator itself does, see
tests/test_world_model_eval.py). Predictions are (B, H, N, 4) x, y, vx, vy for
the steps after a scenario's present frame, as `WorldModel.predict_states`
returns them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .config import RADIUS
from .scenarios import Scenario, alone, pair_gaps

Predict = Callable[[Scenario], Tensor]  # scenario -> (B, H, N, 4)

RISE_TOL = 1e-4  # m: a falling body predicted higher after one step than this
DRIFT_TOL = 0.05  # m: a body at rest without gravity predicted to move this far
REST_BAND = 0.05  # m: a body resting on the floor predicted to leave y = r +- this
WALL_TOL = 0.05  # m: a disc predicted this far past a wall
OVERLAP_TOL = 0.1  # m: two discs predicted to overlap by this much
INVARIANCE_TARGET = 0.02  # m


def _rate(violations: Tensor) -> dict[str, Any]:
    """violations: bool over cases."""
    v, n = int(violations.sum()), int(violations.numel())
    return {"violations": v, "cases": n, "rate": v / n if n else float("nan")}


def rises_in_free_fall(s: Scenario, pred: Tensor) -> dict[str, Any]:
    """Free-flight bodies moving down or level, no impulse: gravity and drag
    can only lower them, so step 1 must not be higher than the present."""
    now = s.context[:, -1]
    case = s.present & (now[..., 3] <= 0)
    return _rate((pred[:, 0, :, 1] - now[..., 1] > RISE_TOL)[case])


def drift_at_rest(s: Scenario, pred: Tensor) -> dict[str, Any]:
    """Body 0 of a `still` world: zero gravity, at rest, nothing touches it."""
    moved = (pred[:, :, 0, 0:2] - s.context[:, -1, None, 0, 0:2]).norm(dim=-1).amax(1)
    return _rate(moved >= DRIFT_TOL)


def floor_rest(s: Scenario, pred: Tensor) -> dict[str, Any]:
    """Body 0 of a `resting` world stays on the floor: y within r +- band."""
    off = (pred[:, :, 0, 1] - s.context[:, -1, None, 0, RADIUS]).abs().amax(1)
    return _rate(off > REST_BAND)


def wall_sinking(s: Scenario, pred: Tensor, box: float) -> Tensor:
    """(B, N) bool: the disc is predicted more than WALL_TOL past a wall at some step."""
    r = s.context[:, -1, None, :, RADIUS, None]  # (B, 1, N, 1)
    past = torch.maximum(r - pred[..., 0:2], pred[..., 0:2] + r - box).amax(-1)  # (B, H, N)
    return (past > WALL_TOL).any(1)[s.present]


def interpenetration(s: Scenario, pred: Tensor) -> Tensor:
    """One entry per pair of real bodies: predicted overlap beyond OVERLAP_TOL at
    some step. The simulator resolves contacts in one sequential pass, so in a
    crowd the truth itself can overlap; what the truth overlaps is allowed."""
    now = s.context[:, -1:].expand(-1, pred.shape[1], -1, -1).clone()
    now[..., 0:2] = pred[..., 0:2]
    allowed = (-pair_gaps(s.future)).clamp(min=0)
    worst = (pair_gaps(now) + allowed).amin(1)  # (B, N, N)
    n = worst.shape[-1]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    pairs = s.present[:, :, None] & s.present[:, None, :] & upper
    return (worst < -OVERLAP_TOL)[pairs]


def plausibility(fams: dict[str, Scenario], preds: dict[str, Tensor], still: Scenario, still_pred: Tensor,
                 box: float) -> dict[str, dict[str, Any]]:
    """Every check, with per-family counts for the two that run over all families."""
    out = {"rises_in_free_fall": rises_in_free_fall(fams["free_flight"], preds["free_flight"]),
           "drift_at_rest": drift_at_rest(still, still_pred),
           "floor_rest": floor_rest(fams["resting"], preds["resting"])}
    for name, fn in (("wall_sinking", lambda s, p: wall_sinking(s, p, box)), ("interpenetration", interpenetration)):
        per = {f: fn(fams[f], preds[f]) for f in fams}
        out[name] = {**_rate(torch.cat(list(per.values()))),
                     "per_family": {f: int(v.sum()) for f, v in per.items()}}
    return out


def invariance(iso: Scenario, predict: Predict) -> dict[str, Any]:
    """Body 0 predicted in its world and alone; the others never come near it,
    so its prediction should not change. Per case: the largest position
    difference over the steps."""
    with_others = predict(iso)[:, :, 0, 0:2]
    solo = predict(alone(iso))[:, :, 0, 0:2]
    diff = (with_others - solo).norm(dim=-1).amax(1)
    n = len(iso)
    others = (iso.present.sum(1) - 1).tolist()
    return {"cases": n, "median_m": float(diff.median()) if n else float("nan"),
            "max_m": float(diff.max()) if n else float("nan"),
            "other_bodies": {str(k): others.count(k) for k in sorted(set(others))}}
