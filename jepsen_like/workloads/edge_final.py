"""The edge workload's final reads, after the heal.

- `converge`: every edge's view (its ``edge-`` entities with each field's value and stamp, and
  the ``edge/`` params with their revisions) read next to the core's (the region the edge
  follows), again until every edge equals its region or `edge_convergence.CONVERGE_S` after
  the heal has passed; when they agreed is recorded on the history's clock.
- `deliver`: every region's ``edge-obs-`` entities (per-source counts and the value written),
  again until each acknowledged observation is in every region or ``--final-wait`` passes;
  and each edge's outbox as its status reports it.

Nothing here is recorded in the history: these are reads of a quiet system, judged from
final.json.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from ..checkers.edge_convergence import CONVERGE_S
from ..client import Api
from ..edges import ENTITY_PREFIX
from ..history import OK
from .base import Context


class Edge(Protocol):
    """What the final reads need of the edge workload (workloads/edge.py)."""

    ctx: Context
    edges: dict[str, dict[str, str]]   # name -> {"url", "region"}
    params: list[str]

    @property
    def world_path(self) -> str: ...

    def edge_client(self) -> Api: ...

OBS_PREFIX = "edge-obs-"
_EDGE_READ = {"max_staleness_ms": 600_000}


async def _entities(api: Api, target: str, path: str, extra: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every entity document the target lists (paged), or None if it did not answer."""
    items: list[dict[str, Any]] = []
    after = None
    for _ in range(1000):
        params = {"limit": 1000, **extra, **({"after": after} if after else {})}
        a = await api.call(target, "GET", path, write=False, params=params)
        if a.type != OK:
            return None
        items += a.body["items"]
        if not a.body.get("next"):
            return items
        after = a.body["next"]["after"]
    return items


def _fields(items: list[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    return {i["entity"]: {n: [f["value"], f["hlc"], f["node"]] for n, f in sorted(i["fields"].items())}
            for i in items if i["entity"].startswith(ENTITY_PREFIX)}


async def _params(api: Api, target: str, path: str, keys: list[str], extra: dict[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for key in keys:
        a = await api.call(target, "GET", f"{path}/{key}", write=False, params=extra or None)
        if a.type == OK:
            out[key] = [a.body["value"], a.body["revision"]]
        elif a.status == 404 and isinstance(a.body, dict) and a.body.get("type") == "/problems/not-found":
            out[key] = None
        else:
            return None
    return out


async def _view(api: Api, target: str, w: Edge, extra: dict[str, Any]) -> dict[str, Any] | None:
    items = await _entities(api, target, f"{w.world_path}/entities", extra)
    params = await _params(api, target, f"{w.world_path}/params", w.params, extra)
    if items is None or params is None:
        return None
    return {"entities": _fields(items), "params": params}


async def converge(w: Edge, healed_ns: int, bound_s: float = CONVERGE_S) -> dict[str, Any]:
    rec = w.ctx.rec
    edges = list(w.edges)
    regions = sorted({w.edges[e]["region"] for e in edges})
    deadline_ns = healed_ns + int(bound_s * 1e9)
    agreed_ns = None
    reads = 0
    while True:
        reads += 1
        cores = await asyncio.gather(*(_view(w.ctx.api, r, w, {}) for r in regions))
        seen = await asyncio.gather(*(_view(w.edge_client(), e, w, _EDGE_READ) for e in edges))
        read_ns = rec.now()
        core = dict(zip(regions, cores))
        if all(v is not None and v == core[w.edges[e]["region"]] for e, v in zip(edges, seen)):
            agreed_ns = read_ns
            break
        if read_ns >= deadline_ns:
            break
        await asyncio.sleep(0.5)
    return {"bound_s": bound_s, "healed_at_ns": healed_ns, "agreed_at_ns": agreed_ns, "read_at_ns": read_ns,
            "reads": reads,
            "core": core, "edges": {e: {"follows": w.edges[e]["region"], "view": v} for e, v in zip(edges, seen)}}


async def deliver(w: Edge, acked: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Read every region until each acknowledged event's entity (one entity per event) is in all of them."""
    deadline = time.monotonic() + w.ctx.final_wait_s
    wanted = {ev["entity"] for ev in acked.values()}
    while True:
        reads = await asyncio.gather(*(_entities(w.ctx.api, r, f"{w.world_path}/entities", {})
                                       for r in w.ctx.regions))
        regions = {r: {i["entity"]: {"total": i["counters"]["observations"]["total"],
                                     "x": (i["fields"].get("x") or {}).get("value"),
                                     "event_id": (i["fields"].get("x") or {}).get("event_id")}
                       for i in items if i["entity"].startswith(OBS_PREFIX)}
                   for r, items in zip(w.ctx.regions, reads) if items is not None}
        if (len(regions) == len(w.ctx.regions) and all(wanted <= set(s) for s in regions.values())) \
                or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    outbox = {}
    for e in w.edges:
        a = await w.edge_client().call(e, "GET", "/v1/edge", write=False)
        outbox[e] = a.body.get("outbox") if a.type == OK else None
    return {"regions": regions, "unread": sorted(set(w.ctx.regions) - set(regions)), "outbox": outbox}
