"""A world's observations as per-entity trajectories on the world's time grid, cut into samples.

The grid is absolute: step k is the instant k * time_step since the epoch, and an observation
belongs to the step nearest its `observed_at`. Per step and per field the latest observation
wins (observed_at, then stream order); its value is taken as the state at the grid instant,
without extrapolating the up to half a step between the two. A step whose merged fields lack
x, y, vx or vy (state_row's REQUIRED) counts as unobserved; radius and mass, when a step lacks
them, carry over from the entity's earlier steps, else state_row's defaults.

A trajectory is a run of observed steps whose holes are at most `max_gap` steps long: those
steps are filled by linear interpolation between their neighbours. A longer hole, or a delete
(the entity's tombstone), splits it. Samples are windows of `frames` steps inside one
trajectory whose first step is a multiple of `stride`, so a window's identity is
(entity, its first instant), whatever order or batches its observations came in. A window is
cut as soon as it is whole; observations arriving for it later are ignored, and an entity
never yields a window at or before its newest one (the frontier): replaying observations
adds no sample. Steps more than 2 * frames + max_gap behind an entity's newest are dropped,
so an observation that much later than its entity's others is ignored.

Pure: no I/O and no torch, the state round-trips through JSON (`state`, `Trajectories(grid, state)`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from world_model.state import DEFAULTS, REQUIRED, STATE_FIELDS

__all__ = ["Grid", "Observed", "Sample", "Trajectories", "DELETED"]

DELETED = "~deleted"  # the tombstone register (consistency/ap_entity.py)
_KEPT = frozenset(STATE_FIELDS) | {DELETED}
# a cell: field -> [observed_at_ms, [stream ms, stream seq], value, event id]
Cell = dict[str, list[Any]]


@dataclass(frozen=True)
class Grid:
    time_step: float  # s, the world's physics/constants time_step
    frames: int = 16  # frames per sample (a Rollouts' T + 1)
    stride: int = 16  # steps between the starts of consecutive samples of an entity
    max_gap: int = 2  # the longest run of missing steps a trajectory bridges

    def __post_init__(self) -> None:
        if not (self.time_step > 0 and self.frames >= 2 and self.stride >= 1 and self.max_gap >= 0):
            raise ValueError(f"bad grid {self}: time_step > 0, frames >= 2, stride >= 1, max_gap >= 0")

    @property
    def dt_ms(self) -> float:
        return self.time_step * 1000.0

    def step(self, at_ms: int) -> int:
        return round(at_ms / self.dt_ms)

    def at_ms(self, step: int) -> int:
        return round(step * self.dt_ms)


class Observed(NamedTuple):
    """One observation of the world, as the stream carried it."""

    entity: str
    event_id: str
    at_ms: int  # observed_at, or when the replica accepted it if the agent gave none
    fields: dict[str, Any]
    position: tuple[int, int]  # its stream id (ms, seq): the tie-break between equal observed_at


@dataclass(frozen=True)
class Sample:
    entity: str
    start_ms: int  # the instant of its first frame: with the entity, the sample's identity
    rows: np.ndarray  # (frames, len(STATE_FIELDS)), STATE_FIELDS order
    events: tuple[str | None, ...]  # the event that gave each frame's x; None where interpolated


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


class Trajectories:
    """Every entity's recent steps and frontier; `add` returns the samples that became whole."""

    def __init__(self, grid: Grid, state: dict[str, Any] | None = None) -> None:
        self.grid = grid
        self.frontier: dict[str, int] = {}  # entity -> start_ms of its newest sample
        self.steps: dict[str, dict[int, Cell]] = {}
        self.floor: dict[str, int] = {}  # entity -> the oldest step still kept
        self.base: dict[str, dict[str, float]] = {}  # radius/mass of dropped steps, carried on
        self.discarded = False  # a state of another grid was given: its open steps were dropped
        if state:
            self.frontier = {e: int(v) for e, v in state.get("frontier", {}).items()}
            if state.get("grid") == asdict(grid):
                for e, ent in state.get("entities", {}).items():
                    self.steps[e] = {int(k): v for k, v in ent["steps"].items()}
                    self.floor[e] = int(ent["floor"])
                    self.base[e] = dict(ent["base"])
            else:
                self.discarded = bool(state.get("entities"))

    def state(self) -> dict[str, Any]:
        entities = {e: {"floor": self.floor.get(e, 0), "base": self.base.get(e, {}),
                        "steps": {str(k): v for k, v in sorted(cells.items())}}
                    for e, cells in sorted(self.steps.items()) if cells}
        return {"grid": asdict(self.grid), "frontier": dict(sorted(self.frontier.items())), "entities": entities}

    def add(self, observations: Iterable[Observed]) -> list[Sample]:
        touched: set[str] = set()
        for ob in observations:
            if self._insert(ob):
                touched.add(ob.entity)
        samples: list[Sample] = []
        for entity in sorted(touched):
            samples += self._cut(entity)
            self._prune(entity)
        return samples

    def _insert(self, ob: Observed) -> bool:
        step = self.grid.step(ob.at_ms)
        if step < self.floor.get(ob.entity, -(1 << 62)):
            return False
        kept = {k: v for k, v in ob.fields.items() if k in _KEPT}
        if not kept:
            return False
        cell = self.steps.setdefault(ob.entity, {}).setdefault(step, {})
        order = (ob.at_ms, *ob.position)
        for name, value in kept.items():
            cur = cell.get(name)
            if cur is None or order > (cur[0], *cur[1]):
                cell[name] = [ob.at_ms, list(ob.position), value, ob.event_id]
        return True

    def _rows(self, entity: str) -> list[tuple[int, list[float] | None, str | None]]:
        """(step, row, event) per kept step in order; row None marks a delete (a split)."""
        carry = dict(DEFAULTS) | self.base.get(entity, {})
        out: list[tuple[int, list[float] | None, str | None]] = []
        for step, cell in sorted(self.steps.get(entity, {}).items()):
            tomb, x = cell.get(DELETED), cell.get("x")
            if tomb is not None and tomb[2] is True and (x is None or (tomb[0], *tomb[1]) >= (x[0], *x[1])):
                out.append((step, None, tomb[3]))
                continue
            for name in ("radius", "mass"):
                if name in cell and _number(cell[name][2]):
                    carry[name] = float(cell[name][2])
            if all(n in cell and _number(cell[n][2]) for n in REQUIRED):
                row = [float(cell[n][2]) for n in REQUIRED] + [carry[n] for n in STATE_FIELDS[len(REQUIRED):]]
                out.append((step, row, cell["x"][3]))
        return out

    def _segments(self, entity: str) -> list[list[tuple[int, list[float], str | None]]]:
        segments: list[list[tuple[int, list[float], str | None]]] = []
        current: list[tuple[int, list[float], str | None]] = []
        for step, row, event in self._rows(entity):
            if row is None or (current and step - current[-1][0] > self.grid.max_gap + 1):
                if current:
                    segments.append(current)
                current = []
            if row is not None:
                current.append((step, row, event))
        if current:
            segments.append(current)
        return segments

    def _cut(self, entity: str) -> list[Sample]:
        g = self.grid
        out: list[Sample] = []
        for seg in self._segments(entity):
            first, last = seg[0][0], seg[-1][0]
            k0 = -(-first // g.stride) * g.stride  # the first aligned start inside the run
            while k0 + g.frames - 1 <= last:
                start_ms = g.at_ms(k0)
                if start_ms > self.frontier.get(entity, -(1 << 62)):
                    out.append(self._window(entity, seg, k0))
                    self.frontier[entity] = start_ms
                k0 += g.stride
        return out

    def _window(self, entity: str, seg: list[tuple[int, list[float], str | None]], k0: int) -> Sample:
        by_step = {s: (row, ev) for s, row, ev in seg}
        known = [s for s, _, _ in seg]
        rows = np.zeros((self.grid.frames, len(STATE_FIELDS)))
        events: list[str | None] = []
        for i, step in enumerate(range(k0, k0 + self.grid.frames)):
            if step in by_step:
                rows[i], ev = by_step[step]
                events.append(ev)
                continue
            # a hole of at most max_gap steps: both neighbours are in the run
            before = max(s for s in known if s < step)
            after = min(s for s in known if s > step)
            w = (step - before) / (after - before)
            a, b = np.array(by_step[before][0]), np.array(by_step[after][0])
            rows[i] = a
            rows[i, :4] = (1 - w) * a[:4] + w * b[:4]
            events.append(None)
        return Sample(entity, self.grid.at_ms(k0), rows, tuple(events))

    def _prune(self, entity: str) -> None:
        cells = self.steps.get(entity)
        if not cells:
            return
        g = self.grid
        floor = max(cells) - (2 * g.frames + g.max_gap)
        if entity in self.frontier:
            # windows start after the frontier; the first may need max_gap + 1 steps before it
            floor = max(floor, g.step(self.frontier[entity]) + g.stride - (g.max_gap + 1))
        floor = max(floor, self.floor.get(entity, floor))
        for step in sorted(s for s in cells if s < floor):
            cell = cells.pop(step)
            for name in ("radius", "mass"):
                if name in cell and _number(cell[name][2]):
                    self.base.setdefault(entity, {})[name] = float(cell[name][2])
        self.floor[entity] = floor
