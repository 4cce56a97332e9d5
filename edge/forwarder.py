"""Store and forward: the observations an edge acknowledged, sent to its region in order.

The edge acknowledges an observation once its outbox row is committed; the forwarder then
posts the oldest rows in batches until the core answers 202. Event ids make resending safe
(the core counts an event id once, in every region), so an answer lost on the way, a
partition or a restart of either side only delays a row, never doubles it. A row the core
refuses as invalid (its clock, say, disagrees with the edge's on an observation's time) is
set aside with the reason after it failed alone, so one bad row never holds up the rest. A row
refused only for being stamped ahead of the core's clock waits until it no longer is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import httpx

from edge.core import Core
from edge.store import EdgeStore

log = logging.getLogger("worldstate.edge")
# Only these say the row itself is wrong; anything else (a revoked key, an unknown world, a core
# that is down) is tried again later: dropping acknowledged rows is never the answer.
REFUSED = frozenset({400, 422})


def _clock_drift(r: httpx.Response) -> float | None:
    """The wait after which the core will take a row it refused as stamped too far ahead, or None."""
    try:
        doc = r.json()
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("type") != "/problems/clock-drift":
        return None
    ahead_ms = float(doc.get("drift_ms", 0)) - float(doc.get("max_drift_ms", 0))
    return max(0.05, ahead_ms / 1000 + 0.05)


class Forwarder:
    def __init__(self, store: EdgeStore, core: Core, world: str, batch: int) -> None:
        self.store = store
        self.core = core
        self.world = world
        self.batch = batch
        self.wake = asyncio.Event()
        self.forwarded = 0
        self.rejected = 0
        self.last_error = ""

    async def run(self) -> None:
        attempt = 0
        while True:
            rows = self.store.pending(self.batch)
            if not rows:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
                continue
            wait = await self._send(rows)
            if wait is None:
                attempt = 0
                continue
            attempt += 1
            await asyncio.sleep(max(wait, min(2.0, 0.05 * 2 ** min(attempt, 8)) * random.uniform(0.5, 1.0)))

    async def _send(self, rows: list[tuple[int, str]]) -> float | None:
        """Post `rows`; None when each is settled (forwarded or set aside), else the wait before trying again."""
        url = self.core.url
        try:
            r = await self.core.http.post(f"{url}/v1/worlds/{self.world}/observations",
                                          content=f"[{','.join(body for _, body in rows)}]",
                                          headers={"Content-Type": "application/json"})
        except httpx.TransportError as e:
            self.core.failed(url)
            self.last_error = f"{type(e).__name__}: {e}"
            return 0.0
        self.core.hear()
        if r.status_code == 202:
            self.store.forwarded([seq for seq, _ in rows], int(time.time() * 1000))
            self.forwarded += len(rows)
            self.last_error = ""
            return None
        self.last_error = f"{r.status_code} {r.text[:300]}"
        if r.status_code not in REFUSED:
            return float(r.headers.get("Retry-After", "0") or 0)
        drift = _clock_drift(r)
        if drift is not None:
            # Stamped ahead of the core's clock (the edge's runs ahead of it): not the row's fault,
            # and it passes as the core's clock catches up. Setting it aside lost acknowledged
            # observations whenever a region's clock was behind the edge's (jepsen_like, edge workload).
            return drift
        if len(rows) > 1:  # find the row the core refuses: each alone
            for row in rows:
                wait = await self._send([row])
                if wait is not None:
                    return wait
            return None
        log.error("edge: the core refused observation %s: %s", json.loads(rows[0][1]).get("event_id"), self.last_error)
        self.store.reject(rows[0][0], self.last_error)
        self.rejected += 1
        return None
