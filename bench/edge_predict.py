"""bench/edge.py's predict rows: the same queries to core r1, to an edge and to plain torch.

Two workloads. "new": every query differs (a distinct, tiny impulse on the first body at step
1), so no node can reuse an answer and the model runs for each. "again": one query asked over
and over, as agents ask between two observations; a node answers it from its predict memo
(world_model/memo.py) once it has run it. Plain torch never reuses anything: it is the cost of
the model call itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.rawhttp import Connection

WORLD = "bench-edge"
# Every ask of an edge accepts an answer however stale, and the run reports how stale they were: the
# figures are latency, and an edge starved of CPU with the core (CI's busy loops) stops hearing from
# it within its 5 s bound and refuses, rightly, what is then not a latency sample.
ANY_AGE = "max_staleness_ms=86400000"
PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "max": max(xs, default=float("nan")),
            "mean": statistics.fmean(xs) if xs else float("nan")}

async def timed_block(conns: list[Connection], n: int, clients: int, body: Callable[[int], bytes],
                      stale_ms: list[int] | None = None) -> tuple[list[float], int]:
    """n predicts split over `clients` concurrent clients, query i's body `body(i)`: latencies in ms,
    and failures. With `stale_ms` (an edge), asked with ANY_AGE, each answer's staleness label goes there."""
    lat: list[float] = []
    failed, left = [0], [n]
    path = f"/v1/worlds/{WORLD}/predict" + ("" if stale_ms is None else f"?{ANY_AGE}")

    async def client(conn: Any) -> None:
        while left[0] > 0:
            left[0] -= 1
            t = time.perf_counter()
            status, _, doc = await conn.request("POST", path, body(next(serial)), {"Content-Type": "application/json"})
            if status == 200:
                lat.append((time.perf_counter() - t) * 1000)
                if stale_ms is not None:
                    stale_ms.append(int(doc["staleness"]["stale_ms"]))
            else:
                failed[0] += 1
                detail = doc.get("detail") if isinstance(doc, dict) else doc
                print(f"predict at port {conn.port} answered {status}: {detail}", file=sys.stderr)

    await asyncio.gather(*(client(c) for c in conns[:clients]))
    return lat, failed[0]


def torch_block(model: Any, rows: list[list[float]], horizon: int, n: int, clients: int) -> list[float]:
    """Plain torch: `clients` queries in one forward call (what a batch of them costs), n queries in all."""
    lat = []
    for _ in range(max(1, n // clients)):
        t = time.perf_counter()
        model.predict_prepared([model.prepare_predict(rows, PHYSICS, horizon) for _ in range(clients)])
        lat.append((time.perf_counter() - t) * 1000)
    return lat


serial = itertools.count()  # every query of the run its own number: a "new" query is never one asked before


def bodies(horizon: int, ids: list[str]) -> dict[str, Callable[[int], bytes]]:
    """Query i's body in each workload (see the module's doc)."""
    same = json.dumps({"horizon": horizon, "entities": ids}).encode()
    return {"new": lambda i: json.dumps({"horizon": horizon, "entities": ids,
                                         "actions": {ids[0]: [[1e-6 * (i + 1), 0.0]]}}).encode(),
            "again": lambda i: same}


async def predict(core_url: str, edge_port: int, key: str | None, model: Any, rows: list[list[float]],
                  ids: list[str], a: argparse.Namespace) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    host, port = core_url.removeprefix("http://").split(":")
    conns = {"core r1": [Connection(host, int(port), auth) for _ in range(a.clients)],
             "edge": [Connection("127.0.0.1", edge_port, auth) for _ in range(a.clients)]}
    out: dict[str, Any] = {}
    for workload, body in bodies(a.horizon, ids).items():
        out[workload] = {}
        for clients in sorted({1, a.clients}):
            lat: dict[str, list[float]] = {"core r1": [], "edge": [], "plain torch": []}
            failed = {"core r1": 0, "edge": 0}
            stale: dict[str, list[int] | None] = {"core r1": None, "edge": []}
            for name in conns:  # warm-up: connections, the batcher's thread (and, "again", the memo)
                await timed_block(conns[name], 2 * clients, clients, body, stale[name])
            torch_block(model, rows, a.horizon, 2 * clients, clients)
            for _ in range(a.rounds):  # alternating blocks: the machine's drift falls on every target
                for name in conns:
                    got, bad = await timed_block(conns[name], a.queries // a.rounds, clients, body, stale[name])
                    lat[name] += got
                    failed[name] += bad
                lat["plain torch"] += torch_block(model, rows, a.horizon, a.queries // a.rounds, clients)
            out[workload][str(clients)] = {name: {**stats(xs), "failed": failed.get(name, 0)}
                                           for name, xs in lat.items()}
            out[workload][str(clients)]["edge"]["stale_ms_max"] = max(stale["edge"] or [0])
    await asyncio.gather(*(c.close() for cs in conns.values() for c in cs))
    return out
