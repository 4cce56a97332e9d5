"""edge: edge nodes following the core, cut off from it and killed, judged on what they promise.

The run's edges (jepsen_like/edges.py: ``edge-K`` follows region ``rN``) hold the world's entities
whose ids start with ``edge-``. Clients:

- writers (``writers``, at the core): ``core-write`` sets field ``n`` of an entity
  ``edge-reg-<region>-<i>`` through that region's API node to the entity's next value (each
  entity has one writer, so ``n`` is a monotonic register there, and its event ids are
  unique); ``core-put`` writes a param ``edge/p<i>`` (CP) a unique, growing value.
- edge clients (``per_edge`` bound to each edge): ``edge-read`` an entity written at the region
  the edge follows, and ``edge-read-param``, both with ``?max_staleness_ms=`` large enough
  that the edge answers while cut off, recording the value and the `stale_ms` it declared;
  ``edge-post`` a new observation (unique event id, an entity ``edge-obs-<k>`` of its own) to
  the edge, acknowledged when 202; a share of posts replay an earlier event to this edge
  (another edge may have taken it first): it must still count once.

After the heal, final reads: every edge's view (entities, params) against the core's (the
region it follows) until they are equal or `CONVERGE_S` after the heal has passed; then
every region's ``edge-obs-`` entities until each acknowledged event is there (bounded by
``--final-wait``). Checkers: edge-staleness, edge-convergence, edge-delivery.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

from ..checkers import edge_convergence, edge_delivery, edge_staleness
from ..checkers.result import CheckerResult
from ..client import Api
from ..history import FAIL, INFO, OK, Event, as_operations, pair
from ..recorder import Process
from .base import Context, Workload
from .edge_final import converge, deliver

READ_BOUND_MS = 600_000  # what edge reads accept: answered while cut off, labelled with their staleness
OPS = ("core-write", "core-put", "edge-read", "edge-read-param", "edge-post")
PARAM_PREFIX = "edge/p"


class Edge(Workload):
    name = "edge"

    def __init__(self, ctx: Context, *, writers: int = 2, per_edge: int = 2, entities: int = 2, params: int = 2,
                 replay: float = 0.1, converge_s: float = edge_convergence.CONVERGE_S,
                 edges: dict[str, dict[str, str]] | None = None) -> None:
        super().__init__(ctx)
        self.writers, self.per_edge = writers, per_edge
        self.entities_per_region, self.params = entities, [f"{PARAM_PREFIX}{i}" for i in range(params)]
        self.replay = replay
        self.converge_s = converge_s  # the bound edge-convergence judges (reported); tests may shorten it
        self.edges: dict[str, dict[str, str]] = {}
        self.edge_api: Api | None = None
        self.attach(edges or {})
        self._next: dict[str, int] = {}           # entity -> the value its writer writes next
        self._values = itertools.count(1)         # params' values
        self._events = itertools.count(1)
        self.sent: list[dict[str, Any]] = []      # every observation posted once, for replays
        self._final: dict[str, Any] = {}
        self._client_index = itertools.count()    # clients start in slot order: their index in this workload

    def attach(self, edges: dict[str, dict[str, str]]) -> None:
        """The run's edges (Cluster.edges.describe()); the runner calls this once the cluster is planned."""
        self.edges = dict(edges)
        regions = sorted({e["region"] for e in self.edges.values()})
        self.entities = {r: [f"edge-reg-{r}-{i}" for i in range(self.entities_per_region)] for r in regions}
        self.clients = (self.writers + self.per_edge * len(self.edges)) if self.edges else 0

    @property
    def world_path(self) -> str:
        return f"/v1/worlds/{self.ctx.world}"

    def edge_client(self) -> Api:
        if self.edge_api is None:  # the edges take the core's key (their --access-key-file default)
            auth = {"Authorization": f"Bearer {self.ctx.api.key}"} if self.ctx.api.key else None
            self.edge_api = Api({n: e["url"] for n, e in self.edges.items()}, self.ctx.api.timeout_s, auth)
        return self.edge_api

    # -- before the load ---------------------------------------------------------------

    async def setup(self) -> None:
        """Wait (bounded) until every edge is in step with the core, so reads are labelled from the start."""
        deadline = time.monotonic() + 60
        for name in self.edges:
            while time.monotonic() < deadline:
                a = await self.edge_client().call(name, "GET", "/readyz", write=False)
                if a.type == OK:
                    break
                await asyncio.sleep(0.2)

    # -- the core's writers ----------------------------------------------------------------

    async def core_write(self, proc: Process, region: str, entity: str) -> None:
        n = self._next.get(entity, 1)
        self._next[entity] = n + 1
        rec = self.ctx.rec
        extra = {"tier": "ap", "region": region}
        rec.invoke(proc.id, "core-write", entity, n, **extra)
        body = {"event_id": f"edge-w-{entity}-{n}", "entity": entity, "source": "writer", "fields": {"n": n}}
        a = await self.ctx.api.call(region, "POST", f"{self.world_path}/observations", write=True, body=body)
        if a.type == OK:
            rec.record(OK, proc.id, "core-write", entity, n, hlc=a.body.get("hlc"), **extra)
        else:
            self._failed(proc, "core-write", entity, n, a.type, a.error, extra)

    async def core_put(self, proc: Process, region: str, key: str) -> None:
        value = next(self._values)
        rec = self.ctx.rec
        extra = {"tier": "cp", "region": region}
        rec.invoke(proc.id, "core-put", key, value, **extra)
        a = await self.ctx.api.call(region, "PUT", f"{self.world_path}/params/{key}", write=True, body=value)
        if a.type == OK and a.status != 412:
            rec.record(OK, proc.id, "core-put", key, value, revision=a.body["revision"], **extra)
        else:
            self._failed(proc, "core-put", key, value, FAIL if a.type == OK else a.type, a.error, extra)

    def _failed(self, proc: Process, f: str, key: str, value: Any, type_: str, error: str | None,
                extra: dict[str, Any]) -> None:
        self.ctx.rec.record(type_, proc.id, f, key, value, error=error, **extra)
        if type_ == INFO:
            proc.crashed()

    # -- at an edge --------------------------------------------------------------------------

    def _at(self, edge: str) -> dict[str, Any]:
        return {"tier": "edge", "region": edge, "edge": edge, "follows": self.edges[edge]["region"]}

    async def edge_read(self, proc: Process, edge: str, entity: str) -> None:
        extra = self._at(edge)
        rec = self.ctx.rec
        rec.invoke(proc.id, "edge-read", entity, None, **extra)
        a = await self.edge_client().call(edge, "GET", f"{self.world_path}/entities/{entity}", write=False,
                                        params={"max_staleness_ms": READ_BOUND_MS})
        if a.type == OK:
            f = a.body["fields"].get("n") or {}
            label = a.body["staleness"]
            out = {"n": f.get("value"), "hlc": f.get("hlc"), "stale_ms": label["stale_ms"],
                   "as_of_ms": label["as_of_ms"]}
            rec.record(OK, proc.id, "edge-read", entity, out, **extra)
        elif a.status == 404 and isinstance(a.body, dict) and a.body.get("type") == "/problems/not-found":
            rec.record(OK, proc.id, "edge-read", entity, {"n": None, "stale_ms": None}, **extra)  # unlabelled
        else:
            rec.record(a.type, proc.id, "edge-read", entity, None, error=a.error, **extra)

    async def edge_read_param(self, proc: Process, edge: str, key: str) -> None:
        extra = self._at(edge)
        rec = self.ctx.rec
        rec.invoke(proc.id, "edge-read-param", key, None, **extra)
        a = await self.edge_client().call(edge, "GET", f"{self.world_path}/params/{key}", write=False,
                                        params={"max_staleness_ms": READ_BOUND_MS})
        if a.type == OK:
            out = {"value": a.body["value"], "revision": a.body["revision"],
                   "stale_ms": a.body["staleness"]["stale_ms"]}
            rec.record(OK, proc.id, "edge-read-param", key, out, **extra)
        elif a.status == 404 and isinstance(a.body, dict) and a.body.get("type") == "/problems/not-found":
            rec.record(OK, proc.id, "edge-read-param", key, {"value": None, "revision": None, "stale_ms": None},
                       **extra)
        else:
            rec.record(a.type, proc.id, "edge-read-param", key, None, error=a.error, **extra)

    async def edge_post(self, proc: Process, edge: str, ev: dict[str, Any], replay: bool = False) -> None:
        extra = {**self._at(edge), **({"replay": True} if replay else {})}
        rec = self.ctx.rec
        rec.invoke(proc.id, "edge-post", ev["entity"], ev, **extra)
        body = {"event_id": ev["id"], "entity": ev["entity"], "source": "edge-cam", "fields": {"x": ev["x"]}}
        a = await self.edge_client().call(edge, "POST", f"{self.world_path}/observations", write=True, body=body)
        if a.type == OK:
            out = {k: a.body.get(k) for k in ("accepted", "duplicate", "outbox")}
            rec.record(OK, proc.id, "edge-post", ev["entity"], out, **extra)
        else:
            self._failed(proc, "edge-post", ev["entity"], ev, a.type, a.error, extra)

    # -- the client loop ---------------------------------------------------------------------

    async def run_client(self, proc: Process, rng: random.Random) -> None:
        index = next(self._client_index)
        if index < self.writers:
            await self._writer(proc, rng, index)
        else:
            await self._edge_client(proc, rng, list(self.edges)[(index - self.writers) % len(self.edges)])

    async def _writer(self, proc: Process, rng: random.Random, index: int) -> None:
        owned = [(r, e) for r, es in self.entities.items() for e in es]
        owned = [x for i, x in enumerate(owned) if i % self.writers == index] or owned
        while not self.ctx.stop.is_set():
            region, entity = rng.choice(owned)
            if rng.random() < 0.2 and self.params:
                await self.core_put(proc, region, rng.choice(self.params))
            else:
                await self.core_write(proc, region, entity)
            await self.ctx.think(rng)

    async def _edge_client(self, proc: Process, rng: random.Random, edge: str) -> None:
        mine = self.entities[self.edges[edge]["region"]]
        while not self.ctx.stop.is_set():
            r = rng.random()
            if r < 0.5:
                await self.edge_read(proc, edge, rng.choice(mine))
            elif r < 0.6 and self.params:
                await self.edge_read_param(proc, edge, rng.choice(self.params))
            elif r < 0.6 + self.replay and self.sent:
                await self.edge_post(proc, edge, rng.choice(self.sent), replay=True)
            else:
                k = next(self._events)
                ev = {"id": f"edge-obs-ev-{k}", "entity": f"edge-obs-{k}", "x": k}
                self.sent.append(ev)
                await self.edge_post(proc, edge, ev)
            await self.ctx.think(rng)

    # -- the end -----------------------------------------------------------------------------

    async def final(self) -> None:
        healed = max((e.time for e in self.ctx.rec.events if e.process == "nemesis" and e.f == "healthy"),
                     default=self.ctx.rec.now())
        self._final["convergence"] = await converge(self, healed, self.converge_s)
        acked = edge_delivery.acknowledged(pair(list(self.ctx.rec.events), strict=False))
        self._final["delivery"] = await deliver(self, acked)
        if self.edge_api is not None:
            await self.edge_api.close()
            self.edge_api = None

    def final_state(self) -> dict[str, Any]:
        return self._final

    def check(self, history: list[Event], final: dict[str, Any]) -> dict[str, CheckerResult]:
        ops = [op for op in as_operations(history) if op.f in OPS]
        return {"edge-staleness": edge_staleness.check(ops),
                "edge-convergence": edge_convergence.check(final.get("convergence", {})),
                "edge-delivery": edge_delivery.check(ops, final.get("delivery", {}))}
