"""The world model's queries against a world's state: predict, surprise, plan.

Each reads the world (physics from the CP tier, entities from this region's
replica), asks the serving model, and says what the answer reflects: the
model's hash and manifest revision, the physics revision, the AP watermark.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from consistency.ap_store import ReplicaStore
from consistency.cp_store import CPStore
from service import world_view
from service.errors import ActionsForUnknown, InvalidInput
from service.model_work import ModelWork
from service.models import ModelHost, Serving
from service.quotas import Quotas
from service.versioned import Consistency
from world_model.errors import HorizonOutOfRange, NonFiniteInput
from world_model.state import MAX_BUDGET, MAX_ENTITIES, MIN_BUDGET, observed_frames

__all__ = ["MAX_BUDGET", "MAX_ENTITIES", "MIN_BUDGET", "Answer", "Frame", "ModelQueries"]

Frame = Mapping[str, float | None]  # x, y, vx, vy and optionally radius, mass


@dataclass(frozen=True)
class Answer:
    """A model answer about a world, with what it reflects."""

    world: str
    entities: list[str]  # the entities the model saw, in the order of its rows
    result: Any  # world_model.inference.Prediction | SurpriseResult | Plan
    time_step: float
    provenance: dict[str, Any]
    skipped: dict[str, list[str]]  # entities of the world left out, with the state fields each lacks


def _finite(*answers: Any) -> None:
    """Refuse an answer JSON cannot carry. Finite inputs far outside the trained 10 m box overflow the
    model's float32 arithmetic into NaN or infinity (measured: an impulse of 1e30, an entity or a goal
    at x=1e20, in predict, surprise and plan alike); rendering such an answer failed with a 500."""
    if not all(np.isfinite(a).all() for a in answers):
        raise NonFiniteInput("the model's answer is not finite: the query's numbers are too far outside "
                             "the world it was trained on")


def _provenance(view: world_view.WorldView, serving: Serving) -> dict[str, Any]:
    return {"model": {"hash": serving.manifest["hash"], "version": serving.manifest["version"],
                      "manifest_revision": serving.revision}, **view.provenance()}


class ModelQueries:
    def __init__(self, cp: CPStore, ap: ReplicaStore, models: ModelHost, quotas: Quotas,
                 max_waiting: int = 8) -> None:
        self.cp = cp
        self.ap = ap
        self.models = models
        self.quotas = quotas
        self.work = ModelWork(max_waiting)

    async def _view(self, world: str, entities: Sequence[str] | None, consistency: Consistency,
                    also: Sequence[str] = ()) -> world_view.WorldView:
        return await world_view.load(self.cp, self.ap, world, entities, consistency, also)

    async def predict(self, world: str, horizon: int, entities: Sequence[str] | None = None,
                      actions: Mapping[str, Sequence[tuple[float, float]]] | None = None,
                      consistency: Consistency = "linearizable") -> Answer:
        """Each entity's positions and velocities for `horizon` steps; `actions` are
        impulses per entity, one [ax, ay] per step from the first (missing steps are 0)."""
        max_horizon = self.models.require().model.max_horizon  # no model: 503 before any I/O
        if horizon > max_horizon:  # before any (horizon, N, 2) impulses are allocated
            raise HorizonOutOfRange(f"horizon {horizon} not in 1..{max_horizon}")
        await self.quotas.charge("queries_per_s")
        view = await self._view(world, entities, consistency)
        impulses = None
        if actions:
            unknown = sorted(set(actions) - set(view.ids))
            if unknown:
                raise ActionsForUnknown(unknown)
            impulses = np.zeros((horizon, len(view.ids), 2))
            for ent, steps in actions.items():
                if len(steps) > horizon:
                    raise InvalidInput(f"actions[{ent}]: {len(steps)} steps, horizon is {horizon}")
                if steps:
                    impulses[: len(steps), view.ids.index(ent)] = steps
        # Taken with no await before the batcher queues the query: a hot-swap closes the old
        # batcher, and one taken before the reads above could already be closed (a dropped request).
        serving = self.models.require()
        p = await serving.batcher.predict(view.rows, view.physics, horizon, impulses)
        _finite(p.positions, p.velocities)
        return Answer(world, view.ids, p, view.physics["time_step"], _provenance(view, serving), view.skipped)

    async def surprise(self, world: str, observed: Mapping[str, Sequence[Frame]],
                       entities: Sequence[str] | None = None, consistency: Consistency = "linearizable",
                       cancel: threading.Event | None = None) -> Answer:
        """How far the frames observed after the current state are from what the model expected.
        Setting `cancel` (the client left) skips the work if it has not started."""
        steps = {len(frames) for frames in observed.values()}
        if len(steps) != 1 or 0 in steps:
            raise InvalidInput("every observed entity needs the same, non-zero number of frames")
        serving = self.models.require()
        await self.quotas.charge("queries_per_s")
        view = await self._view(world, entities, consistency, also=list(observed))
        frames, present = observed_frames({view.ids.index(e): f for e, f in observed.items()}, view.rows,
                                          steps.pop())
        r = await self.work.run(serving.model.surprise, view.rows, frames, view.physics, None, present, cancel=cancel)
        _finite(r.per_entity[present.any(axis=0)])  # the scores of the observed entities are the answer
        return Answer(world, view.ids, r, view.physics["time_step"], _provenance(view, serving), view.skipped)

    async def plan(self, world: str, entity: str, goal: tuple[float, float, float], horizon: int,
                   budget: int, entities: Sequence[str] | None = None,
                   consistency: Consistency = "linearizable", cancel: threading.Event | None = None) -> Answer:
        """Impulses for `entity` that bring it into the goal disc (x, y, radius) within `horizon`.
        Setting `cancel` (the client left) stops the search at its next iteration."""
        serving = self.models.require()
        await self.quotas.charge("queries_per_s")
        view = await self._view(world, entities, consistency, also=[entity])
        p = await self.work.run(serving.model.plan, view.rows, view.physics, view.ids.index(entity),
                                list(goal), horizon, budget, cancel=cancel, cancellable=True)
        _finite(p.actions, p.predicted_path, p.predicted_distance)
        return Answer(world, view.ids, p, view.physics["time_step"], _provenance(view, serving), view.skipped)
