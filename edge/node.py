"""One edge node: its store, its feeds from the core, its forwarder and its model queries,
and the staleness label every answer carries."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from edge import sabotage
from edge.config import EdgeConfig
from edge.core import Core
from edge.freshness import Freshness, positions_of
from edge.models import EdgeModels
from edge.store import EdgeStore
from edge.views import EdgeAP, EdgeCP
from service.errors import EdgeStale, NotOnEdge
from service.observation_input import parse
from service.queries import ModelQueries
from service.quotas import Quotas

MAX_BATCH = 1000
MAX_DRIFT_MS = 500


class Edge:
    def __init__(self, cfg: EdgeConfig) -> None:
        self.cfg = cfg
        self.store = EdgeStore(cfg.data_dir / "edge.sqlite3")
        meta = self.store.meta
        # What the disk says the edge reflected when it stopped: it answers from that at once.
        self.fresh = Freshness(as_of=meta.get("as_of"), cp_applied=meta.get("cp_revision") or 0,
                               changes_applied=positions_of(meta.get("changes")),
                               manifest_applied=(meta.get("manifest") or {}).get("revision", 0),
                               region=meta.get("region"))
        self.core = Core(cfg)
        self.models = EdgeModels(self.store, cfg.data_dir / "checkpoints", cfg.device, cfg.torch_threads)
        self.plan = sabotage.plan()  # the production classes unless a test planted a bug
        self.follower = self.plan.follower(cfg, self.store, self.fresh, self.core, self.models)
        self.forwarder = self.plan.forwarder(self.store, self.core, cfg.world, cfg.forward_batch)
        self.queries = ModelQueries(EdgeCP(self.store, self.fresh, cfg.world),  # type: ignore[arg-type]
                                    EdgeAP(self.store, self.fresh, cfg.world, cfg.entities),  # type: ignore[arg-type]
                                    self.models.host, Quotas(None))  # type: ignore[arg-type]
        self.started = time.time()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.models.restore()
        self._tasks = [asyncio.create_task(self.follower.run(), name="edge-follower"),
                       asyncio.create_task(self.forwarder.run(), name="edge-forwarder")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.models.host.stop()
        await self.core.close()
        self.store.close()

    # -- what a request may see ----------------------------------------------------------

    def holds(self, world: str, entity: str | None = None) -> None:
        if world != self.cfg.world:
            raise NotOnEdge(f"this edge holds world {self.cfg.world!r}, not {world!r}")
        if entity is not None and not entity.startswith(self.cfg.entities):
            raise NotOnEdge(f"this edge holds the entities of {world!r} starting with {self.cfg.entities!r}")

    def staleness(self, max_staleness_ms: int | None) -> dict[str, Any]:
        """The label of an answer made now, or EdgeStale if it would be staler than allowed."""
        now = time.time()
        stale = self.fresh.stale_s(now)
        limit_s = self.cfg.max_staleness_s if max_staleness_ms is None else max_staleness_ms / 1000
        stale_ms = None if stale is None else math.ceil(stale * 1000)
        as_of_ms = None if self.fresh.as_of is None else int(self.fresh.as_of * 1000)
        if stale is None or stale > limit_s:
            raise EdgeStale(stale_ms, round(limit_s * 1000), as_of_ms, max(1.0, self.cfg.probe_s))
        heard = self.core.heard
        newest = self.follower.newest_event_ms
        if stale_ms is not None and self.plan.under_report_ms:
            stale_ms = max(0, stale_ms - self.plan.under_report_ms)
        return {"stale_ms": stale_ms, "as_of_ms": as_of_ms, "max_staleness_ms": round(limit_s * 1000),
                "bounded": max_staleness_ms is not None, "edge": self.cfg.name, "region": self.fresh.region,
                "cp_revision": self.fresh.cp_applied, "changes": self.fresh.changes_applied,
                "heard_ms_ago": None if heard is None else round((now - heard) * 1000),
                "newest_event_age_ms": None if not newest else max(0, round(now * 1000) - newest)}

    # -- observations --------------------------------------------------------------------

    def observe(self, world: str, body: Any) -> dict[str, Any]:
        """Validate as the core does, store durably, and acknowledge; forwarding happens later."""
        self.holds(world)
        now_ms = int(time.time() * 1000)
        obs = parse(body, world, MAX_BATCH, now_ms, MAX_DRIFT_MS)
        docs = body if isinstance(body, list) else [body]
        rows = []
        for ob, doc in zip(obs, docs):
            # The time the edge received it, when the sensor gave none: forwarding may be much later.
            at_ms = ob.observed_at_ms if ob.observed_at_ms is not None else now_ms
            rows.append((ob.event_id, json.dumps({**doc, "observed_at": at_ms / 1000}, allow_nan=False)))
        duplicates = self.store.enqueue(rows, now_ms)
        self.forwarder.wake.set()
        return {"edge": self.cfg.name, "accepted": len(rows) - len(duplicates), "duplicate": len(duplicates),
                "duplicates": duplicates, "forwarded": False, "outbox": self.store.outbox_depth()}

    def status(self) -> dict[str, Any]:
        now = time.time()
        stale = self.fresh.stale_s(now)
        return {"edge": self.cfg.name, "world": self.cfg.world, "entities_prefix": self.cfg.entities,
                "core": self.core.url, "region": self.fresh.region,
                "stale_ms": None if stale is None else math.ceil(stale * 1000),
                "max_staleness_ms": round(self.cfg.max_staleness_s * 1000),
                "cp_revision": self.fresh.cp_applied, "changes": self.fresh.changes_applied,
                "entities": sum(1 for e in self.store.entities.values() if e.visible),
                "params": len(self.store.params),
                "outbox": {"pending": self.store.outbox_depth(), "forwarded": self.forwarder.forwarded,
                           "refused": self.store.refused(), "last_error": self.forwarder.last_error},
                "model": self.models.host.status() | {"fetched_bytes": self.models.fetched_bytes},
                "feeds": dict(self.follower.errors),
                "cp_applied_at_ms": [[r, round(t * 1000, 1)] for r, t in self.follower.applied]}
