"""observations (AP): unique events posted to every region, replays included, and reads back.

Each client is bound to one region and mixes:

- ``post``: a new event (unique id) setting field ``x`` of a shared entity
  to a unique value, or creating a fresh entity (so a delta lost in
  replication cannot be hidden by a later write to the same entity);
- ``replay``: an event already posted (acknowledged, failed or unknown) posted
  again to a random region: the service promises a duplicate changes
  nothing, so counters must still count it once;
- ``rmw``: read an entity on the home region, post a newer ``x`` there,
  read again. The post records which write of ``x`` it followed: the HLC
  must order it after that one (the causal checker);
- ``read``: read an entity.

After the heal and the quiet period every region's whole state is read
(again until they agree, within a bound) for the convergence checker.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

from ..checkers import causal, convergence
from ..checkers.result import CheckerResult, Violation
from ..history import INFO, OK, Event, Operation, as_operations
from ..recorder import Process
from .base import Context, Workload


class Observations(Workload):
    name = "observations"
    # Subclasses that drive the same operations through another client (the SDK, gRPC) tag their
    # operations `via` and prefix their entities and event ids, so several can share one run's
    # world and each judges only its own.
    via: str | None = None
    prefix = ""

    def __init__(self, ctx: Context, *, clients: int = 6, entities: int = 3, sources: int = 3,
                 fresh: float = 0.2, mix: tuple[float, float, float] = (0.45, 0.15, 0.2)) -> None:
        super().__init__(ctx)
        self.clients = clients
        self.entities = [f"{self.prefix}ent-{i}" for i in range(entities)]
        self.sources = [f"s{i}" for i in range(sources)]
        self.fresh = fresh
        self.mix = mix                        # post, replay, rmw; the rest are reads
        self._values = itertools.count(1)
        self._ids = itertools.count(1)
        self.sent: list[dict[str, Any]] = []  # every event posted once, for replays
        self._final: dict[str, dict[str, Any]] = {}
        self._agreed = False

    @property
    def base(self) -> str:
        return f"/v1/worlds/{self.ctx.world}"

    # -- operations ------------------------------------------------------------------

    def new_event(self, entity: str, rng: random.Random, follows: dict[str, Any] | None = None,
                  read_on: str | None = None) -> dict[str, Any]:
        source = rng.choice(self.sources)
        ev = {"id": f"{self.prefix}ev-{next(self._ids)}", "entity": entity, "source": source,
              "fields": {"x": next(self._values)}, "counters": {source: 1}}
        if follows:
            ev["follows"], ev["read_on"] = follows, read_on  # only that node's HLC saw what was read
        return ev

    async def post(self, proc: Process, region: str, ev: dict[str, Any], replay: bool = False) -> bool:
        """One recorded POST; True when this post was the one that stored the event."""
        rec = self.ctx.rec
        extra = {"tier": "ap", "region": region, "node": self.ctx.node(region), **({"replay": True} if replay else {})}
        rec.invoke(proc.id, "post", ev["entity"], ev, **extra)
        body = {"event_id": ev["id"], "entity": ev["entity"], "source": ev["source"], "fields": ev["fields"]}
        a = await self.ctx.api.call(region, "POST", f"{self.base}/observations", write=True, body=body)
        if a.type == OK:
            accepted = a.body.get("accepted", 0) == 1
            out = {"status": "accepted" if accepted else "duplicate", "token": a.body.get("token")}
            if accepted:
                out["hlc"] = a.body.get("hlc")  # the stamp of this event's fields (one event per post)
            rec.record(OK, proc.id, "post", ev["entity"], out, **extra)
            return accepted
        rec.record(a.type, proc.id, "post", ev["entity"], ev, error=a.error, **extra)
        if a.type == INFO:
            proc.crashed()
        return False

    async def read(self, proc: Process | int, region: str, entity: str, **extra: Any) -> dict[str, Any] | None:
        pid = proc if isinstance(proc, int) else proc.id
        rec = self.ctx.rec
        rec.invoke(pid, "read-entity", entity, None, tier="ap", region=region, **extra)
        a = await self.ctx.api.call(region, "GET", f"{self.base}/entities/{entity}", write=False)
        if a.status == 404:
            rec.record(OK, pid, "read-entity", entity, None, tier="ap", region=region, **extra)
            return {}
        if a.type != OK:
            rec.record(a.type, pid, "read-entity", entity, None, error=a.error, tier="ap", region=region, **extra)
            return None
        state = entity_state(a.body)
        rec.record(OK, pid, "read-entity", entity, state, tier="ap", region=region, **extra)
        return state

    # -- the client loop ----------------------------------------------------------------

    async def run_client(self, proc: Process, rng: random.Random) -> None:
        regions = self.ctx.regions
        home = regions[proc.slot % len(regions)]
        n = 0
        while not self.ctx.stop.is_set():
            n += 1
            r = rng.random()
            post, replay, rmw = self.mix
            if r < post:
                fresh = rng.random() < self.fresh
                entity = f"{self.prefix}fresh-{proc.slot}-{n}" if fresh else rng.choice(self.entities)
                ev = self.new_event(entity, rng)
                self.sent.append(ev)
                await self.post(proc, home, ev)
            elif r < post + replay and self.sent:
                await self.post(proc, rng.choice(regions), rng.choice(self.sent), replay=True)
            elif r < post + replay + rmw:
                entity = rng.choice(self.entities)
                seen = await self.read(proc, home, entity)
                if seen is not None:
                    x = (seen.get("fields") or {}).get("x")
                    follows = {"x": [x["event_id"], x["hlc"]]} if x else None
                    ev = self.new_event(entity, rng, follows, home)
                    self.sent.append(ev)
                    if await self.post(proc, home, ev):
                        await self.read(proc, home, entity)  # must show ev or newer, never what it followed
            else:
                await self.read(proc, home, rng.choice(self.entities))
            await self.ctx.think(rng)

    # -- the end ----------------------------------------------------------------------

    async def read_all(self, region: str) -> dict[str, Any] | None:
        """Every entity of the world on one replica (paged), or None if it did not answer."""
        out: dict[str, Any] = {}
        after = None
        for _ in range(10_000):  # bounded: 1000 entities a page
            params: dict[str, Any] = {"limit": 1000, **({"after": after} if after else {})}
            a = await self.ctx.api.call(region, "GET", f"{self.base}/entities", write=False, params=params)
            if a.type != OK:
                return None
            for item in a.body["items"]:
                out[item["entity"]] = entity_state(item)
            nxt = a.body.get("next")
            if not nxt:
                return out
            after = nxt["after"]
        return out

    async def final(self) -> None:
        """Read every region until all agree, or until the bound: what the checker judges."""
        deadline = time.monotonic() + self.ctx.final_wait_s
        while True:
            reads = await asyncio.gather(*(self.read_all(r) for r in self.ctx.regions))
            self._final = {r: s for r, s in zip(self.ctx.regions, reads) if s is not None}
            self._agreed = len(self._final) == len(self.ctx.regions) and _agree(list(self._final.values()))
            if self._agreed or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.5)

    def final_state(self) -> dict[str, Any]:
        return {"regions": self._final, "agreed": self._agreed,
                "unread": sorted(set(self.ctx.regions) - set(self._final))}

    def owns(self, entity: str) -> bool:
        if self.prefix:
            return entity.startswith(self.prefix)
        return entity.startswith(("ent-", "fresh-"))

    def check(self, history: list[Event], final: dict[str, Any]) -> dict[str, CheckerResult]:
        ops = [op for op in as_operations(history) if op.get("tier") == "ap" and op.get("via") == self.via]
        regions = {r: {e: st for e, st in state.items() if self.owns(e)}
                   for r, state in final.get("regions", {}).items()}
        conv = convergence.check(regions, events_from_history(ops))
        for region in final.get("unread", []):
            conv.violations.append(Violation(
                "unread", f"region {region} did not answer the final read", {"region": region}))
        tag = f"{self.via}-" if self.via else ""
        return {f"{tag}convergence": conv, f"{tag}causal": causal.check(ops, regions)}


def entity_state(doc: dict[str, Any]) -> dict[str, Any]:
    """An entity document of the API in the convergence checker's shape."""
    fields = {name: {"value": f["value"], "hlc": f["hlc"], "node": f["node"], "event_id": f["event_id"]}
              for name, f in (doc.get("fields") or {}).items()}
    counters = (doc.get("counters") or {}).get("observations", {}).get("by_source", {})
    return {"fields": fields, "counters": dict(counters)}


def _agree(states: list[dict[str, Any]]) -> bool:
    def norm(s: dict[str, Any]) -> Any:
        return sorted((e, sorted((k, v["value"], v["hlc"], v["node"]) for k, v in st["fields"].items()),
                       sorted((k, c) for k, c in st["counters"].items() if c)) for e, st in s.items())
    first = norm(states[0])
    return all(norm(s) == first for s in states[1:])


def events_from_history(ops: list[Operation]) -> list[dict[str, Any]]:
    """One record per event id for the convergence checker.

    The acknowledgement that stored the event gives the stamp of its fields;
    when several regions stored it (posted to two before either heard of the
    other) the lowest stamp is kept, the weakest claim. A "duplicate" ack
    says the event exists but carries another post's stamp, so none is kept.
    """
    best: dict[str, dict[str, Any]] = {}
    for op in ops:
        if op.f != "post" or op.type not in (OK, INFO) or not isinstance(op.value, dict):
            continue
        ev = op.value
        rec = {"id": ev["id"], "entity": ev["entity"], "fields": ev["fields"], "counters": ev["counters"],
               "status": op.type}
        out = op.output if op.type == OK and isinstance(op.output, dict) else {}
        if out.get("status") == "accepted" and out.get("hlc"):
            rec["hlc"], rec["node"] = out["hlc"], op.get("node")
        cur = best.get(ev["id"])
        if cur is None or _stronger(rec, cur):
            best[ev["id"]] = rec
    return list(best.values())


def _stronger(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Is record a the better evidence? ok over info; with a stamp over without; the lower stamp."""
    if a["status"] != b["status"]:
        return a["status"] == OK
    if ("hlc" in a) != ("hlc" in b):
        return "hlc" in a
    return "hlc" in a and a["hlc"] < b["hlc"]
