"""Serving API: a loaded model on a device answering predict, surprise and plan.

States are arrays of rows (x, y, vx, vy, radius, mass), one per entity,
either one frame (N, 6) or the last few frames oldest first (W', N, 6) with
W' <= the model's window. Entity i is row i. Physics is a `Physics` or a dict
with its four fields. All queries run under torch.inference_mode; bad input
raises a subclass of `errors.InvalidInput` before any work is done.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoints import CheckpointStore, from_bytes, sha256_hex
from .config import OBS_DIM, PHYSICS_FIELDS, PRESENT, Config, Physics
from .errors import (BadShape, HorizonOutOfRange, InvalidBudget, InvalidGoal, InvalidState, NonFiniteInput,
                     PhysicsOutOfRange, QueryTooCostly, SpeedOutOfRange, StateOutsideBox, TooManyEntities,
                     UnknownEntity)
from .model import JEPA, surprise_score
from .planner import LatentDynamics, PlanResult, aim, cem
from .state import MAX_BUDGET, MAX_ENTITIES, MAX_PLAN_COST, MIN_BUDGET, largest_budget, plan_cost
from .device import resolve_device



BOX_SLACK = 0.01  # m: sensors round; a disc this far into a wall is still taken as touching it
MAX_SPEED = 50.0  # m/s, per component: beyond it a body moves half the box in one 0.1 s step


@dataclass
class Prediction:
    positions: np.ndarray  # (H, N, 2) for steps 1..H
    velocities: np.ndarray  # (H, N, 2)

    def to_dict(self) -> dict[str, Any]:
        return {"positions": self.positions.tolist(), "velocities": self.velocities.tolist()}


@dataclass
class SurpriseResult:
    score: float  # energy of the most surprising entity
    threshold: float  # calibrated on normal held-out rollouts
    surprising: bool
    entity: int  # index of the most surprising entity
    per_entity: np.ndarray  # (N,) mean energy over the observed steps
    per_step: np.ndarray  # (K, N)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "threshold": self.threshold, "surprising": self.surprising,
                "entity": self.entity, "per_entity": self.per_entity.tolist(), "per_step": self.per_step.tolist()}


@dataclass
class Plan:
    actions: np.ndarray  # (H, 2) impulses (N*s) on the body, one per step
    predicted_path: np.ndarray  # (H, 2) positions the model expects
    predicted_distance: float  # from the final position to the goal centre
    reaches_goal: bool  # predicted final position inside the goal region

    def to_dict(self) -> dict[str, Any]:
        return {"actions": self.actions.tolist(), "predicted_path": self.predicted_path.tolist(),
                "predicted_distance": self.predicted_distance, "reaches_goal": self.reaches_goal}


@dataclass
class PreparedPredict:
    """A validated predict query as tensors, ready to be batched."""

    frames: Tensor  # (W, N, OBS)
    visible: Tensor  # (W,)
    physics: Tensor  # (4,)
    actions: Tensor  # (H, N, 2)
    horizon: int


def _array(x: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise BadShape(f"{name}: not a numeric array ({e})") from None
    if not np.all(np.isfinite(a)):
        raise NonFiniteInput(f"{name}: contains NaN or infinity")
    return a


class WorldModel:
    """A trained JEPA held on one device."""

    def __init__(self, blob: dict[str, Any], device: str | torch.device | None = None,
                 digest: str | None = None):
        self.cfg = Config.from_dict(blob["config"])
        self.device = resolve_device(str(device or "auto"))
        self.jepa = JEPA(self.cfg.model, self.cfg.sim.box).to(self.device)
        self.jepa.load_state_dict(blob["jepa"])
        self.jepa.eval()
        self.jepa.requires_grad_(False)
        self.calibration: dict[str, float] = dict(blob.get("calibration", {}))
        self.metrics: dict[str, Any] = dict(blob.get("metrics", {}))
        self.hash = digest
        self.window = self.cfg.model.window
        self.max_horizon = self.cfg.model.max_horizon

    @classmethod
    def load(cls, digest: str, checkpoint_dir: str, device: str | torch.device | None = None) -> "WorldModel":
        """Load by content hash; raises checkpoints.CheckpointIntegrityError if the blob was altered."""
        return cls(CheckpointStore(checkpoint_dir).load(digest), device, digest)

    @classmethod
    def from_bytes(cls, data: bytes, device: str | torch.device | None = None) -> "WorldModel":
        return cls(from_bytes(data), device, sha256_hex(data))

    # ---- validation -------------------------------------------------------
    def _frames(self, states: Any, name: str = "states") -> tuple[Tensor, Tensor]:
        a = _array(states, name)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[-1] != 6:
            raise BadShape(f"{name}: expected (N, 6) or (W, N, 6) rows of x, y, vx, vy, radius, mass; got {a.shape}")
        w, n = a.shape[0], a.shape[1]
        if not 1 <= w <= self.window:
            raise BadShape(f"{name}: between 1 and {self.window} frames, got {w}")
        if n < 1:
            raise BadShape(f"{name}: no entities")
        if n > MAX_ENTITIES:
            raise TooManyEntities(f"{name}: {n} entities, at most {MAX_ENTITIES}")
        if np.any(a[..., 4] <= 0) or np.any(a[..., 5] <= 0):
            raise InvalidState(f"{name}: radius and mass must be positive")
        box, r = self.cfg.sim.box, a[..., 4]
        outside = (a[..., 0:2] < r[..., None] - BOX_SLACK) | (a[..., 0:2] > box - r[..., None] + BOX_SLACK)
        if np.any(outside):
            t, i = (int(v[0]) for v in np.nonzero(outside.any(-1)))
            raise StateOutsideBox(f"{name}: entity {i} at ({a[t, i, 0]:g}, {a[t, i, 1]:g}) with radius {r[t, i]:g} "
                                  f"is not inside the {box:g} m box (its centre must lie in [radius, {box:g} - radius])")
        if np.any(np.abs(a[..., 2:4]) > MAX_SPEED):
            raise SpeedOutOfRange(f"{name}: velocity components beyond {MAX_SPEED:g} m/s")
        frames = torch.zeros(self.window, n, OBS_DIM)
        frames[self.window - w:, :, 0:6] = torch.as_tensor(a, dtype=torch.float32)
        frames[self.window - w:, :, PRESENT] = 1.0
        frames[: self.window - w, :, 5] = 1.0  # hidden frames: mass 1 keeps divisions finite
        visible = torch.zeros(self.window)
        visible[self.window - w:] = 1.0
        return frames, visible

    def _physics(self, physics: Physics | dict[str, Any]) -> Tensor:
        if isinstance(physics, dict):
            missing = set(PHYSICS_FIELDS) - set(physics)
            if missing:
                raise BadShape(f"physics: missing {sorted(missing)}")
            try:
                physics = Physics.from_dict(physics)
            except (TypeError, ValueError) as e:
                raise BadShape(f"physics: {e}") from None
        if not isinstance(physics, Physics):
            raise BadShape("physics: expected a Physics or a dict")
        vals = physics.as_list()
        if not all(math.isfinite(v) for v in vals):
            raise NonFiniteInput("physics: contains NaN or infinity")
        bad = self.cfg.sim.ranges.contains(physics)
        if bad:
            ranges = {k: getattr(self.cfg.sim.ranges, k) for k in bad}
            raise PhysicsOutOfRange(f"physics outside the trained ranges: {ranges}")
        return torch.tensor(vals, dtype=torch.float32)

    def _horizon(self, horizon: Any) -> int:
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)):
            raise BadShape("horizon: expected an integer")
        if not 1 <= int(horizon) <= self.max_horizon:
            raise HorizonOutOfRange(f"horizon {horizon} not in 1..{self.max_horizon}")
        return int(horizon)

    def _actions(self, actions: Any, steps: int, n: int) -> Tensor:
        if actions is None:
            return torch.zeros(steps, n, 2)
        a = _array(actions, "actions")
        if a.shape != (steps, n, 2):
            raise BadShape(f"actions: expected shape ({steps}, {n}, 2), got {a.shape}")
        if np.any(np.abs(a) > MAX_SPEED * self.cfg.sim.mass[0]):
            raise SpeedOutOfRange(f"actions: impulse components beyond {MAX_SPEED * self.cfg.sim.mass[0]:g} N*s "
                                  f"(a {MAX_SPEED:g} m/s change for the lightest body)")
        return torch.as_tensor(a, dtype=torch.float32)

    def prepare_predict(self, states: Any, physics: Physics | dict[str, Any], horizon: int,
                        actions: Any = None) -> PreparedPredict:
        frames, visible = self._frames(states)
        h = self._horizon(horizon)
        return PreparedPredict(frames, visible, self._physics(physics),
                               self._actions(actions, h, frames.shape[1]), h)

    # ---- tensor queries (evaluation, benchmarks): no validation, batched ---
    @torch.inference_mode()
    def predict_states(self, frames: Tensor, physics: Tensor, actions: Tensor,
                       visible: Tensor | None = None) -> Tensor:
        """frames (B, W, N, OBS_DIM) ending at the present, physics (B, 4), actions (B, H, N, 2)
        -> predicted (B, H, N, 4) x, y, vx, vy in physical units, on the caller's device."""
        dev, out_dev = self.device, frames.device
        vis = None if visible is None else visible.to(dev)
        z = self.jepa.predict_states(frames.to(dev), physics.to(dev), actions.to(dev), vis)
        return self.jepa.read_state(z).to(out_dev)

    @torch.inference_mode()
    def surprise_scores(self, frames: Tensor, actions: Tensor, physics: Tensor) -> Tensor:
        """frames (B, W+K, N, OBS_DIM): W context frames then K observed; actions (B, K, N, 2)
        -> (B,) scores comparable with `threshold(K)`."""
        dev = self.device
        e, valid = self.jepa.surprise(frames.to(dev), actions.to(dev), physics.to(dev))
        return surprise_score(e, valid).to(frames.device)

    def threshold(self, k: int) -> float:
        """The `surprising` threshold for a query with k observed steps."""
        per_k = self.calibration.get("thresholds") or [self.calibration.get("threshold", float("inf"))]
        return float(per_k[min(k, len(per_k)) - 1])

    def dynamics(self) -> LatentDynamics:
        """What the planner rolls candidates through (planner.Dynamics)."""
        return LatentDynamics(self.jepa)

    @torch.inference_mode()
    def plan_batch(self, window: Tensor, physics: Tensor, body: Tensor, goal: Tensor, horizon: int,
                   budget: int = 256, seed: int = 0) -> PlanResult:
        """E problems at once: window (E, W, N, OBS_DIM), physics (E, 4), body (E,) index,
        goal (E, 3) = x, y, radius -> PlanResult (actions (E, H, 2), cost (E,), path (E, H, 2))."""
        dyn, amax = self.dynamics(), self.cfg.sim.action_max
        ctx = dyn.prepare(window, physics, body)
        guess = aim(window[:, -1], body, physics, goal, horizon, amax)
        res = cem(dyn, ctx, goal.to(self.device), horizon, budget, amax, torch.Generator().manual_seed(seed),
                  mean=guess)
        res.reaches = (res.cost + self.uncertainty(horizon) <= goal[:, 2].to(res.cost.device))
        return res

    def uncertainty(self, horizon: int) -> float:
        """How far off (m) a predicted position may be after `horizon` steps: the 90th percentile
        of the error on held-out windows, measured at training (0 for models without it)."""
        q = self.calibration.get("position_error_q90") or [0.0]
        return float(q[min(horizon, len(q)) - 1])

    # ---- queries ----------------------------------------------------------
    def predict(self, states: Any, physics: Physics | dict[str, Any], horizon: int,
                actions: Any = None) -> Prediction:
        """Positions and velocities of every entity for steps 1..horizon.
        actions: optional (horizon, N, 2) impulses applied before each step."""
        return self.predict_prepared([self.prepare_predict(states, physics, horizon, actions)])[0]

    @torch.inference_mode()
    def predict_prepared(self, reqs: Sequence[PreparedPredict]) -> list[Prediction]:
        """One forward pass for many queries: worlds are padded to the largest
        entity count and horizon; padding bodies are masked out of attention,
        so each answer is the one it would get alone."""
        b = len(reqs)
        n = max(r.frames.shape[1] for r in reqs)
        h = max(r.horizon for r in reqs)
        frames = torch.zeros(b, self.window, n, OBS_DIM)
        frames[..., 5] = 1.0
        actions = torch.zeros(b, h, n, 2)
        for i, r in enumerate(reqs):
            frames[i, :, : r.frames.shape[1]] = r.frames
            actions[i, : r.horizon, : r.frames.shape[1]] = r.actions
        dev = self.device
        visible = torch.stack([r.visible for r in reqs]).to(dev)
        physics = torch.stack([r.physics for r in reqs]).to(dev)
        z = self.jepa.predict_states(frames.to(dev), physics, actions.to(dev), visible)
        y = self.jepa.read_state(z).cpu().numpy()
        out = []
        for i, r in enumerate(reqs):
            yi = y[i, : r.horizon, : r.frames.shape[1]]
            out.append(Prediction(yi[..., 0:2].copy(), yi[..., 2:4].copy()))
        return out

    @torch.inference_mode()
    def surprise(self, context_states: Any, observed: Any, physics: Physics | dict[str, Any],
                 actions: Any = None, observed_present: Any = None) -> SurpriseResult:
        """How far what was observed is from what the model expected.

        context_states: (N, 6) or (W', N, 6); observed: (K, N, 6), the K frames
        that followed; observed_present: optional (K, N) booleans, False where an
        entity was not seen (it vanished); actions: optional (K, N, 2).
        The energy is the latent distance between the predicted and the observed
        (target-encoded) latent, scaled per dimension by its typical value; the
        score is the most surprising entity's median over the K steps, and
        `surprising` compares it with a threshold calibrated for K steps."""
        frames, visible = self._frames(context_states, "context_states")
        n = frames.shape[1]
        obs = _array(observed, "observed")
        if obs.ndim != 3 or obs.shape[1:] != (n, 6):
            raise BadShape(f"observed: expected (K, {n}, 6), got {obs.shape}")
        k = self._horizon(obs.shape[0])
        present = np.ones((k, n), dtype=bool)
        if observed_present is not None:
            present = np.asarray(observed_present, dtype=bool)
            if present.shape != (k, n):
                raise BadShape(f"observed_present: expected ({k}, {n}), got {present.shape}")
        if np.any((obs[..., 4] <= 0) & present) or np.any((obs[..., 5] <= 0) & present):
            raise InvalidState("observed: radius and mass must be positive")
        phys = self._physics(physics)
        acts = self._actions(actions, k, n)
        o = torch.zeros(k, n, OBS_DIM)
        o[..., 0:6] = torch.as_tensor(obs, dtype=torch.float32)
        o[..., PRESENT] = torch.as_tensor(present, dtype=torch.float32)
        o = o * o[..., PRESENT:PRESENT + 1]
        o[..., 5] = torch.where(o[..., PRESENT] > 0, o[..., 5], 1.0)
        dev = self.device
        full = torch.cat([frames, o])[None].to(dev)
        e, valid = self.jepa.surprise(full, acts[None].to(dev), phys[None].to(dev), visible[None].to(dev))
        score = float(surprise_score(e, valid)[0])
        per_entity = e[0].mean(0)
        thr = self.threshold(k)  # calibrated for this many observed steps
        return SurpriseResult(score, thr, score > thr, int(per_entity.argmax()),
                              per_entity.cpu().numpy(), e[0].cpu().numpy())

    @torch.inference_mode()
    def plan(self, state: Any, physics: Physics | dict[str, Any], body: int,
             goal_region: Any, horizon: int, budget: int = 256, seed: int = 0,
             cancelled: Callable[[], bool] | None = None) -> Plan:
        """Impulses on entity `body` for the next `horizon` steps that should
        bring it into goal_region = (x, y, radius) (or a dict with those keys)
        at the last step. CEM in latent space; budget = candidate rollouts."""
        frames, visible = self._frames(state, "state")
        n = frames.shape[1]
        if isinstance(body, bool) or not isinstance(body, (int, np.integer)) or not 0 <= int(body) < n:
            raise UnknownEntity(f"body {body!r}: entities are 0..{n - 1}")
        h = self._horizon(horizon)
        if isinstance(goal_region, dict):
            try:
                goal_region = [goal_region["x"], goal_region["y"], goal_region["radius"]]
            except KeyError as e:
                raise InvalidGoal(f"goal_region: missing {e}") from None
        g = _array(goal_region, "goal_region")
        if g.shape != (3,) or g[2] <= 0:
            raise InvalidGoal("goal_region: expected (x, y, radius) with radius > 0")
        box = self.cfg.sim.box
        if not (0 <= g[0] <= box and 0 <= g[1] <= box):
            raise InvalidGoal(f"goal_region: the centre ({g[0]:g}, {g[1]:g}) is outside the {box:g} m box")
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not MIN_BUDGET <= budget <= MAX_BUDGET:
            raise InvalidBudget(f"budget {budget!r} not in {MIN_BUDGET}..{MAX_BUDGET}")
        cost = plan_cost(int(budget), h, n)
        if cost > MAX_PLAN_COST:
            most = largest_budget(h, n)
            raise QueryTooCostly(f"budget {budget} x horizon {h} with {n} bodies is {cost:,} units of work, "
                                 f"at most {MAX_PLAN_COST:,} (about a second): with {n} bodies and horizon {h} "
                                 f"a budget of at most {most}")
        phys = self._physics(physics)
        dev = self.device
        dyn = LatentDynamics(self.jepa)
        body_t = torch.tensor([int(body)], device=dev)
        ctx = dyn.prepare(frames[None].to(dev), phys[None].to(dev), body_t, visible[None].to(dev))
        goal = torch.as_tensor(g, dtype=torch.float32, device=dev)[None]
        amax = self.cfg.sim.action_max
        guess = aim(frames[None, -1], body_t.cpu(), phys[None], goal.cpu(), h, amax)
        res = cem(dyn, ctx, goal, h, int(budget), amax, torch.Generator().manual_seed(seed), mean=guess,
                  cancelled=cancelled)
        dist = float(res.cost[0])
        # Claimed only with room for the model's usual error: a plan predicted to end 0.95 m from
        # the centre of a 1 m goal misses about as often as it hits.
        return Plan(res.actions[0].cpu().numpy(), res.path[0].cpu().numpy(), dist,
                    dist + self.uncertainty(h) <= float(g[2]))
