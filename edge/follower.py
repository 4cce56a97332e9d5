"""The edge's feeds from the core: the world's params by watch, its entities by subscription,
the core's positions by probe (edge/freshness.py), the model by manifest and blob.

Each feed is a loop that survives the core going away: a dropped stream is reopened after a
growing, jittered wait, from where the edge's store says it is (the last revision and
position applied), at the next core URL if the one in use stopped answering. What the core
cannot resume (compacted history, a trimmed changes log, a position of another region's log)
is read again whole, and the result replaces what the edge held in one step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from client._sse import Event, Parser
from consistency.ap_entity import FieldState
from edge.config import EdgeConfig
from edge.core import Core
from edge.freshness import Freshness, Probe, positions_of
from edge.models import EdgeModels
from edge.store import Entity, EdgeStore

log = logging.getLogger("worldstate.edge")
MAX_BACKOFF_S = 2.0


class Resync(Exception):
    """What the edge holds cannot be continued from: read it again whole."""


def hlc_ms(hlc: str) -> int:
    try:
        return int(hlc.partition("-")[0], 16)
    except ValueError:
        return 0


async def _lines(core: Core, path: str, params: dict[str, Any]) -> AsyncIterator[Event | str]:
    """One connection to an event stream of the core: its events, and its comments as strings.
    Raises Resync for what the core says cannot be resumed."""
    url = core.url
    try:
        async with core.http.stream("GET", f"{url}{path}", params=params) as r:
            if r.status_code in (410, 422):  # compacted, trimmed, or a position this log never issued
                await r.aread()
                raise Resync(f"{path}: {r.status_code} {r.text[:200]}")
            r.raise_for_status()
            parser = Parser()
            async for line in r.aiter_lines():
                core.hear()
                ev = parser.feed(line)
                for comment in parser.comments:
                    yield comment
                parser.comments.clear()
                if ev is not None:
                    if ev.event in ("error", "slow-consumer"):
                        raise Resync(f"{path}: {ev.event} {ev.data[:200]}")
                    yield ev
    except httpx.TransportError:
        core.failed(url)
        raise


class Follower:
    def __init__(self, cfg: EdgeConfig, store: EdgeStore, fresh: Freshness, core: Core, models: EdgeModels,
                 now: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = store
        self.fresh = fresh
        self.core = core
        self.models = models
        self.now = now
        self.newest_event_ms = int(store.meta.get("newest_event_ms", 0))
        self.resync_entities = asyncio.Event()
        # (revision, wall time) of the last param changes applied: when a change reached this edge,
        # by its own clock (GET /v1/edge; bench/edge.py times fan-out with it)
        self.applied: deque[tuple[int, float]] = deque(maxlen=64)
        self.errors: dict[str, str] = {}  # feed -> its last failure, for the edge's status
        self._world = f"/v1/worlds/{cfg.world}"

    async def run(self) -> None:
        await asyncio.gather(self._forever("cp", self._follow_params), self._forever("entities", self._follow_entities),
                             self._forever("probe", self._probe), self._forever("flush", self._flush))

    async def _forever(self, name: str, loop: Callable[[], Any]) -> None:
        attempt = 0
        while True:
            try:
                await loop()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a feed outlives any failure of the core or the link
                self.errors[name] = f"{type(e).__name__}: {e}"[:300]
                if not isinstance(e, (httpx.HTTPError, Resync)):
                    log.exception("edge feed %s failed", name)
                attempt += 1
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.05 * 2 ** min(attempt, 8)) * random.uniform(0.5, 1.0))

    # -- CP: the world's params, physics included ----------------------------------------

    async def _relist_params(self) -> int:
        items: list[tuple[str, Any, int]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            r = await self.core.http.get(f"{self.core.url}{self._world}/params", params=params)
            r.raise_for_status()
            doc = r.json()
            items += [(i["key"], i["value"], i["revision"]) for i in doc["items"]]
            if not doc["next"]:
                break
            params = {"limit": 1000, **doc["next"]}
        self.store.replace_params(items)
        self._cp_applied(doc["revision"])
        return int(doc["revision"])

    def _cp_applied(self, revision: int) -> None:
        self.store.set_meta("cp_revision", revision)
        self.fresh.cp(revision)

    async def _follow_params(self) -> None:
        applied = self.store.meta.get("cp_revision")
        if applied is None:
            applied = await self._relist_params()
        params = {"start_revision": applied + 1, "progress_s": self.cfg.progress_s}
        try:
            async for item in _lines(self.core, f"{self._world}/watch", params):
                if isinstance(item, str):
                    if item.startswith("progress "):
                        revision = int(item.split()[1])
                        if revision < self.fresh.cp_applied:
                            # Behind what this edge applied: another etcd cluster (its data dir
                            # followed a different core), or one restored from a backup.
                            raise Resync(f"the core is at revision {revision}, the edge at {self.fresh.cp_applied}")
                        self._cp_applied(revision)
                    continue
                if item.event not in ("put", "delete"):
                    continue
                d = json.loads(item.data)
                if item.event == "put":
                    self.store.put_param(d["key"], d["value"], d["revision"])
                else:
                    self.store.delete_param(d["key"])
                self.applied.append((int(d["revision"]), time.time()))
                # Another change of the same revision (one transaction) may follow this one.
                self._cp_applied(int(d["revision"]) - 1)
        except Resync as e:
            log.warning("edge params: %s; reading them again", e)
            self.fresh.cp_applied = 0  # a relisting may be at a lower revision (another cluster)
            await self._relist_params()

    # -- AP: the world's entities (those with the prefix) ----------------------------------

    async def _positions(self) -> dict[str, Any]:
        url = self.core.url
        try:
            r = await self.core.http.get(f"{url}{self._world}/positions", timeout=max(2.0, self.cfg.probe_s * 4))
        except httpx.TransportError:
            self.core.failed(url)
            raise
        r.raise_for_status()
        self.core.hear()
        return r.json()  # type: ignore[no-any-return]

    async def _relist_entities(self) -> str:
        """Every entity of the subset as the core holds it now, and the position that listing is
        at least as new as (changes after it are applied on top, idempotently)."""
        pos = await self._positions()
        entities: dict[str, Entity] = {}
        params: dict[str, Any] = {"limit": 1000}
        while True:
            r = await self.core.http.get(f"{self.core.url}{self._world}/entities", params=params)
            r.raise_for_status()
            doc = r.json()
            for item in doc["items"]:
                if item["entity"].startswith(self.cfg.entities):
                    e = entities.setdefault(item["entity"], Entity())
                    for name, f in item["fields"].items():
                        self._saw(f["hlc"])
                        e.put(name, FieldState(f["value"], f["hlc"], f["node"], f.get("source", ""),
                                               f.get("event_id", ""), f.get("observed_at_ms")))
            if not doc["next"]:
                break
            params = {"limit": 1000, **doc["next"]}
        self.store.replace_entities(entities)
        if pos["region"] != self.fresh.region:
            self.fresh.new_region(pos["region"])
        self.store.set_meta("region", pos["region"])
        self._changes_applied(pos["changes"])
        return str(pos["changes"])

    def _changes_applied(self, position: str) -> None:
        self.store.set_meta("changes", position)
        self.fresh.changes(position)

    def _saw(self, hlc: str) -> None:
        ms = hlc_ms(hlc)
        if ms > self.newest_event_ms:
            self.newest_event_ms = ms
            self.store.set_meta("newest_event_ms", ms)

    async def _follow_entities(self) -> None:
        position = positions_of(self.store.meta.get("changes"))
        region = self.store.meta.get("region")
        if position is None or region is None or self.resync_entities.is_set() or \
                (self.fresh.region is not None and region != self.fresh.region):
            self.resync_entities.clear()
            position = await self._relist_entities()
        elif self.fresh.region is None:
            self.fresh.region = region
        params: dict[str, Any] = {"after": position, "progress_s": self.cfg.progress_s}
        if self.cfg.entities:
            params["prefix"] = self.cfg.entities
        try:
            async for item in _lines(self.core, f"{self._world}/entities/stream", params):
                if self.resync_entities.is_set():
                    return  # the probe found another region behind the URL: start again from a listing
                if isinstance(item, str):
                    if item.startswith("progress "):
                        self._changes_applied(item.split()[1])
                    continue
                if item.event != "change" or item.id is None:
                    continue
                d = json.loads(item.data)
                self.store.apply_change(d["entity"], d.get("fields", {}), d["hlc"], d["node"], bool(d.get("deleted")))
                self._saw(d["hlc"])
                self._changes_applied(item.id)
        except Resync as e:
            log.warning("edge entities: %s; reading them again", e)
            self.resync_entities.set()

    # -- the probe: staleness, and the model ---------------------------------------------

    async def _probe(self) -> None:
        while True:
            sent = self.now()
            pos = await self._positions()
            if self.fresh.region is not None and pos["region"] != self.fresh.region:
                log.warning("edge: the core now answers from region %s (was %s)", pos["region"], self.fresh.region)
                self.resync_entities.set()
            manifest = pos.get("manifest") or {}
            revision = int(manifest.get("revision") or 0)
            if revision > self.fresh.manifest_applied:
                await self.models.follow(self.core, revision)
                self.fresh.manifest(revision)
            self.fresh.probed(Probe(sent, int(pos["cp_revision"]), str(pos["changes"]), revision))
            self.store.set_meta("as_of", self.fresh.as_of)
            self.errors.pop("probe", None)
            await asyncio.sleep(self.cfg.probe_s)

    async def _flush(self) -> None:
        while True:
            self.store.flush()
            await asyncio.sleep(0.2)
