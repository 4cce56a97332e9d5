"""What a query to the world model is made of, outside any tensor.

An entity's state is a row of STATE_FIELDS; radius and mass default to
mid-range values of the trained world when a source never reported them.
This module is the only place that knows the column order: callers hand it
named values and get arrays back. It imports neither torch nor the model, so
a serving node can shape a query without loading the training code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

STATE_FIELDS = ("x", "y", "vx", "vy", "radius", "mass")
REQUIRED = STATE_FIELDS[:4]
DEFAULTS: dict[str, float] = {"radius": 0.5, "mass": 1.0}

MAX_ENTITIES = 64  # hard cap per query; the model was trained on far fewer bodies (cfg.sim.max_bodies)
MIN_BUDGET = 8  # CEM needs a few candidates per elite
MAX_BUDGET = 65536
# A plan's work in candidate-steps weighted by what one step costs for n bodies: a fixed part
# per candidate, a part per body (encoders, wall contacts) and the body pairs the contact check
# looks at. bench/plan_cost.py on 2 cores (one torch thread) measures the largest allowed plan of
# each body count: with 8 + n² (no per-body part) 2 bodies took 0.88-1.36 s and 8 bodies
# 1.08-1.29 s, over the 1 s target; the per-body part brings both budgets down by a third.
MAX_PLAN_COST = 2_000_000
PLAN_STEP_UNITS = 8
PLAN_BODY_UNITS = 4


def step_units(n: int) -> int:
    """What one candidate-step of a plan with n bodies costs, in the units of MAX_PLAN_COST."""
    return PLAN_STEP_UNITS + PLAN_BODY_UNITS * n + n * n


def plan_cost(budget: int, horizon: int, n: int) -> int:
    """A plan's cost in the units of MAX_PLAN_COST."""
    return budget * horizon * step_units(n)


def largest_budget(horizon: int, n: int) -> int:
    """The largest budget whose plan fits in MAX_PLAN_COST (may be under MIN_BUDGET)."""
    return min(MAX_BUDGET, MAX_PLAN_COST // (horizon * step_units(n)))


class MissingState(ValueError):
    """An entity lacks a finite number for some of REQUIRED (or a non-number radius/mass)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"lacks numeric {', '.join(missing)}")
        self.missing = missing


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def state_row(values: Mapping[str, Any]) -> list[float]:
    """One entity's row from its named values (absent: the default, if any)."""
    row: list[float] = []
    missing = []
    for name in STATE_FIELDS:
        v = values[name] if name in values else DEFAULTS.get(name)
        if _number(v):
            row.append(float(v))
        else:
            missing.append(name)
    if missing:
        raise MissingState(missing)
    return row


def observed_frames(frames: Mapping[int, Sequence[Mapping[str, Any]]], rows: Sequence[Sequence[float]],
                    steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The (steps, N, 6) frames observed after `rows` and a (steps, N) mask of which were seen.

    `frames` maps an entity's index in `rows` to its observed frames, oldest first;
    a frame's missing radius or mass is the entity's current one. An entity not
    observed at a step is absent there.
    """
    observed = np.zeros((steps, len(rows), len(STATE_FIELDS)))
    present = np.zeros((steps, len(rows)), dtype=bool)
    for i, seen in frames.items():
        for t, frame in enumerate(seen):
            current = dict(zip(STATE_FIELDS, rows[i]))
            observed[t, i] = [current[n] if frame.get(n) is None else frame[n] for n in STATE_FIELDS]
            present[t, i] = True
    for name in ("radius", "mass"):  # positive, so absent rows pass validation; the model masks them
        observed[~present, STATE_FIELDS.index(name)] = 1.0
    return observed, present
