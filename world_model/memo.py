"""Answers of recent predict queries, by their exact inputs.

A prediction is a function of the model and of its inputs alone (state rows, physics, horizon,
impulses: no sampling, inference mode), so a query whose inputs equal, bit for bit, those of one
answered before gets that answer again without a forward pass. Agents ask the same question
many times between two observations of a world (every control tick, or several agents about
one scene); the first asks the model, the rest read the answer. A changed state, physics,
horizon or impulse is a different key, so nothing is ever stale: there is nothing to
invalidate. One memo belongs to one batcher, and a batcher to one model, so a hot-swapped
model starts with an empty memo.

Keys are built from the inputs as the caller gave them, before validation; input that does not
make a numeric array gets no key (and then fails validation as usual).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import numpy as np

from .inference import Prediction

Key = tuple[bytes, tuple[float, ...], int, bytes | None]


def memo_key(states: Any, physics: Any, horizon: int, actions: Any = None) -> Key | None:
    """The exact inputs of a query, or None when they cannot be a key (not numeric)."""
    try:
        rows = np.asarray(states, dtype=np.float64)
        acts = None if actions is None else np.asarray(actions, dtype=np.float64)
        if dataclasses.is_dataclass(physics) and not isinstance(physics, type):
            phys = tuple(float(v) for v in dataclasses.astuple(physics))
        else:
            phys = tuple(float(physics[k]) for k in sorted(physics))
    except (TypeError, ValueError, KeyError):
        return None
    # Shapes go in too: the same bytes in another shape are another query.
    return (repr(rows.shape).encode() + rows.tobytes(), phys, int(horizon),
            None if acts is None else repr(acts.shape).encode() + acts.tobytes())


class PredictionMemo:
    """The last `size` distinct queries' answers, least recently used out first (0: off)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("memo size >= 0")
        self.size = size
        self.hits = 0
        self._answers: OrderedDict[Key, Prediction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: Key | None) -> Prediction | None:
        if key is None or not self.size:
            return None
        p = self._answers.get(key)
        if p is not None:
            self._answers.move_to_end(key)
            self.hits += 1
        return p

    def put(self, key: Key | None, p: Prediction) -> None:
        if key is None or not self.size:
            return
        # Shared by every caller that asks again: nobody may change it in place.
        p.positions.flags.writeable = False
        p.velocities.flags.writeable = False
        self._answers[key] = p
        self._answers.move_to_end(key)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)
