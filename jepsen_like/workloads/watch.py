"""watch (CP): clients watch the register keys and record every event they see.

Each watcher is one operation for the whole test: it watches the prefix
``reg/`` from revision 1 on one region's API node, reconnecting with
``Last-Event-ID`` whenever the stream breaks, and completes after the final
reads, once it has seen the newest revision any register operation
reported (``ok``), or when the bound runs out (``info``: the events it saw
are still checked). The watch checker then holds every watcher to the one
sequence of revisions the acknowledged writes define: ordered, unique, no
gaps, same values.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import httpx

from ..checkers import watch
from ..checkers.result import CheckerResult
from ..history import INFO, OK, Event
from ..recorder import Process
from .base import Context, Workload
from .register import PREFIX


class Watch(Workload):
    name = "watch"
    until_final = True  # its clients run past the time limit, until final() has set their target

    def __init__(self, ctx: Context, *, clients: int | None = None, catch_up_s: float = 10.0) -> None:
        super().__init__(ctx)
        self.clients = clients or len(ctx.regions)
        self.catch_up_s = catch_up_s
        self.target: int | None = None           # the revision every watcher must reach
        self.finish = asyncio.Event()            # set when watchers must stop, caught up or not
        self._progress: dict[int, int] = {}      # slot -> last revision seen
        self._done: list[asyncio.Event] = []
        self._stats: dict[int, dict[str, Any]] = {}

    async def run_client(self, proc: Process, rng: random.Random) -> None:
        region = self.ctx.regions[proc.slot % len(self.ctx.regions)]
        rec = self.ctx.rec
        rec.invoke(proc.id, "watch", PREFIX, {"from_revision": 1, "prefix": True}, tier="watch", region=region)
        events: list[dict[str, Any]] = []
        stats = self._stats.setdefault(proc.slot, {"region": region, "reconnects": 0, "errors": []})
        follow = asyncio.ensure_future(self._follow(region, events, stats))
        try:
            # Polled, not awaited: a watcher already past the target gets no more events to wake it.
            while not follow.done() and not self.finish.is_set():
                if self.target is not None and (events[-1]["revision"] if events else 0) >= self.target:
                    break
                await asyncio.sleep(0.1)
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
        last = events[-1]["revision"] if events else 0
        caught_up = self.target is not None and last >= self.target
        rec.record(OK if caught_up else INFO, proc.id, "watch", PREFIX, events, tier="watch", region=region,
                   reconnects=stats["reconnects"], last_revision=last)

    async def _follow(self, region: str, events: list[dict[str, Any]], stats: dict[str, Any]) -> None:
        """Stream events into `events`, reconnecting after the last one seen, until finished or caught up."""
        path = f"/v1/worlds/{self.ctx.world}/watch"
        while True:
            last = events[-1]["revision"] if events else 0
            params = {"prefix": PREFIX, **({} if last else {"start_revision": 1})}
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                async for sse in self.ctx.api.sse(region, path, params, headers):
                    if sse.get("event") == "error":
                        stats["errors"].append(sse.get("data"))
                        break
                    data = json.loads(sse["data"])
                    events.append({"key": data["key"], "value": data.get("value"),
                                   "revision": data["revision"], "type": sse.get("event", "put")})
                    if self.target is not None and data["revision"] >= self.target:
                        return
            except (httpx.HTTPError, ValueError, KeyError) as e:
                stats["errors"] = (stats["errors"] + [f"{type(e).__name__}: {e}"])[-5:]
            stats["reconnects"] += 1
            if self.target is not None and events and events[-1]["revision"] >= self.target:
                return
            await asyncio.sleep(0.3)

    async def final(self) -> None:
        """Wait (bounded) until every watcher has seen the newest revision the register reported."""
        revs = [e.revision for e in self.ctx.rec.events
                if e.type == OK and e.f in ("read", "write", "cas") and e.revision is not None
                and not (isinstance(e.value, dict) and e.value.get("cas_ok") is False)]
        self.target = max(revs, default=0)
        deadline = time.monotonic() + self.catch_up_s
        while time.monotonic() < deadline and not self._all_caught_up():
            await asyncio.sleep(0.2)
        self.finish.set()

    def _all_caught_up(self) -> bool:
        open_ = [e for e in self.ctx.rec.events if e.f == "watch"]
        watching = {e.process for e in open_ if e.type == "invoke"} - {e.process for e in open_ if e.type != "invoke"}
        return not watching

    def final_state(self) -> dict[str, Any]:
        return {"target_revision": self.target, "watchers": {str(k): v for k, v in self._stats.items()}}

    def check(self, history: list[Event], final: dict[str, Any]) -> dict[str, CheckerResult]:
        return {"watch": watch.check(history)}
