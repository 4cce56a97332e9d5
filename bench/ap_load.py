"""bench/ap.py's load generator: observations and POSTs encoded before the clock starts.
Shared by bench/ap.py and bench/ap_shards.py."""

from __future__ import annotations

import asyncio
import time

import orjson

from bench.rawhttp import Connection
from consistency import ap_keys as K
from consistency.ap_store import Observation, ReplicaStore, pack_observation
from deploy.launcher import Deployment

WORLD = "bench"
_counter = 0


def observation(i: int) -> dict[str, object]:
    global _counter
    _counter += 1
    return {"event_id": f"ev-{_counter}", "entity": f"body{i % 1000}", "source": "cam",
            "fields": {"x": i * 0.5, "y": 1.25, "vx": -0.5, "vy": 2.0}}


def api_headers(d: Deployment) -> dict[str, str]:
    """What every API request sends: its media type and the admin key (checking it is part of the API's cost)."""
    return {"Content-Type": "application/json", "Authorization": f"Bearer {d.admin_key}"}


async def api_rate(host: str, port: int, headers: dict[str, str], batch: int, concurrency: int,
                   seconds: float) -> float:
    """POSTs whose bodies are encoded before the clock starts, so the load generator,
    which shares the machine's two cores, costs as little as it can."""
    bodies = [orjson.dumps(observation(0) if batch == 1 else [observation(j) for j in range(batch)])
              for _ in range(int(seconds * 80_000 / batch) + concurrency)]
    conns = [Connection(host, port) for _ in range(concurrency)]
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(c: Connection) -> None:
        nonlocal done
        while time.perf_counter() < deadline and bodies:
            status, _, resp = await c.request("POST", f"/v1/worlds/{WORLD}/observations", bodies.pop(), headers)
            assert status == 202, resp
            done += batch

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(c) for c in conns])
    elapsed = time.perf_counter() - t0
    for c in conns:
        await c.close()
    return done / elapsed


def packed_batch(store: ReplicaStore, size: int) -> dict[int, list[bytes]]:
    """`size` new observations packed as the store packs them, grouped by partition (for ingest_calls)."""
    groups: dict[int, list[bytes]] = {}
    for j in range(size):
        o = observation(j)
        ob = Observation(WORLD, str(o["entity"]), str(o["event_id"]), "cam", o["fields"])  # type: ignore[arg-type]
        groups.setdefault(K.partition(WORLD, ob.entity), []).append(
            pack_observation(ob, f"{store.hlc.now().to_string()}|{store.node_id}"))
    return groups
