"""Planted bugs in an edge node, FOR TESTS ONLY: each breaks one promise that jepsen_like's edge
checkers guard, to prove they can fail (as service/sabotage.py does for the core).

An edge reads ``WORLDSTATE_EDGE_SABOTAGE`` (comma-separated names below) once at its start; the
names fold into one `EdgePlan` (the classes it builds its feeds and forwarder from, and a bias of
its staleness label). Unset, the plan is the production one. An unknown name stops the edge at
its start: a misspelt sabotage must not pass for a clean run.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from edge.follower import Follower
from edge.forwarder import Forwarder

ENV = "WORLDSTATE_EDGE_SABOTAGE"
UNDER_REPORT_MS = 2000  # edge-under-report-staleness: the label claims this much less than it measured
# edge-freeze: how long after its start an edge still applies entity changes. Long enough that it is
# in step with the core before jepsen_like's load starts (2-4 s on the 2-core machine), short enough
# that a 10 s load writes after it.
FREEZE_AFTER_S = 10.0
DROP_EVERY = 3  # edge-drop-outbox: each outbox row whose sequence number is a multiple of this


class DroppingForwarder(Forwarder):
    """edge-drop-outbox: some acknowledged rows are marked forwarded without ever being sent."""

    async def _send(self, rows: list[tuple[int, str]]) -> float | None:
        dropped = [seq for seq, _ in rows if seq % DROP_EVERY == 0]
        if dropped:
            self.store.forwarded(dropped, int(time.time() * 1000))
        kept = [row for row in rows if row[0] % DROP_EVERY != 0]
        return await super()._send(kept) if kept else None


class FreezingFollower(Follower):
    """edge-freeze: FREEZE_AFTER_S after start the entity feed stops applying anything, progress
    included, so the label stays honest: the edge says it is ever staler, and never catches up."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._frozen_at = time.monotonic() + FREEZE_AFTER_S

    async def _follow_entities(self) -> None:
        left = self._frozen_at - time.monotonic()
        if left <= 0:
            await asyncio.Event().wait()  # frozen: never returns
        try:
            await asyncio.wait_for(super()._follow_entities(), left)
        except asyncio.TimeoutError:
            pass


@dataclass(frozen=True)
class EdgePlan:
    """What an edge builds; the default is production."""

    follower: type[Follower] = Follower
    forwarder: type[Forwarder] = Forwarder
    under_report_ms: int = 0  # subtracted from every stale_ms the edge declares


@dataclass(frozen=True)
class Sabotage:
    description: str
    plant: Callable[[EdgePlan], EdgePlan]


REGISTRY: dict[str, Sabotage] = {
    "edge-under-report-staleness": Sabotage(
        f"the edge declares its answers {UNDER_REPORT_MS} ms fresher than it measured",
        lambda p: replace(p, under_report_ms=UNDER_REPORT_MS)),
    "edge-drop-outbox": Sabotage(f"every {DROP_EVERY}rd acknowledged observation is dropped, not forwarded",
                                 lambda p: replace(p, forwarder=DroppingForwarder)),
    "edge-freeze": Sabotage(f"the edge stops applying entity changes {FREEZE_AFTER_S:.0f} s after its start",
                            lambda p: replace(p, follower=FreezingFollower)),
}
SABOTAGES = {name: s.description for name, s in REGISTRY.items()}


def parse(value: str) -> frozenset[str]:
    names = frozenset(v.strip() for v in value.split(",") if v.strip())
    unknown = names - REGISTRY.keys()
    if unknown:
        raise ValueError(f"unknown edge sabotage {sorted(unknown)}; known: {sorted(REGISTRY)}")
    return names


def plan(environ: Mapping[str, str] = os.environ) -> EdgePlan:
    edge_plan = EdgePlan()
    for name in sorted(parse(environ.get(ENV, ""))):
        edge_plan = REGISTRY[name].plant(edge_plan)
    return edge_plan
