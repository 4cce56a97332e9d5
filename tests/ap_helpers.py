"""Helpers for AP-tier tests: replicas started by the launcher, shippers run in the test's loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from redis.exceptions import RedisError

from consistency.ap_store import Observation, ReplicaStore
from consistency.replication import Replicator
from deploy.launcher import Deployment


def flush(d: Deployment) -> None:
    for node in d.redis.values():
        if node.running:
            redis.Redis(port=node.port).flushall()


def state(d: Deployment, region: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every merged entity of one replica, exactly as stored."""
    r = redis.Redis(port=d.redis[region].port)
    return {k: r.hgetall(k) for k in sorted(r.scan_iter(match="ws:e:*", count=1000))}


@asynccontextmanager
async def replication(d: Deployment, regions: list[str] | None = None) -> AsyncIterator[dict[str, Replicator]]:
    """One home store and a replicator per region, as each region's API node would run them."""
    regions = regions or sorted(d.redis)
    reps: dict[str, Replicator] = {}
    for r in regions:
        home = ReplicaStore(d.redis[r].url, r, f"node-{r}")
        peers = [ReplicaStore(d.redis[p].url, p, f"node-{r}") for p in regions if p != r]
        reps[r] = Replicator(home, peers, housekeeping_s=3600)
        reps[r].start()
    try:
        yield reps
    finally:
        for rep in reps.values():
            await rep.stop()
            await rep.home.close()


def cut(reps: dict[str, Replicator], a: str, b: str) -> None:
    """Partition: no deltas flow between regions a and b, either way."""
    reps[a].shippers[b].pause()
    reps[b].shippers[a].pause()


def heal(reps: dict[str, Replicator]) -> None:
    for rep in reps.values():
        for s in rep.shippers.values():
            s.resume()


async def quiesce(reps: dict[str, Replicator], timeout: float = 20.0) -> None:
    """Wait until every shipper has shipped everything its home replica holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        done = True
        try:
            for rep in reps.values():
                last = await rep.home.last_id()
                for region, s in rep.shippers.items():
                    if s.paused or await rep.home.acked(region) != last:
                        done = False
        except RedisError:
            done = False  # a pooled connection to a restarted Redis; the next try reconnects
        if done:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("replication did not quiesce")


def ob(entity: str, event: str, source: str = "cam", **fields: object) -> Observation:
    return Observation("w", entity, event, source, dict(fields))  # type: ignore[arg-type]
