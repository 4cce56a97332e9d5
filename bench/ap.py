"""AP tier: ingest rate through the API versus the raw merge script, replication lag, convergence.

    python bench/ap.py [--seconds 3]
    python bench/ap.py --ap-shards 1,2,4    # ingest per region on 1, 2, 4 masters: bench/ap_shards.py

1. Ingest, observations/s: single POSTs at several concurrencies and batches of
   100 and 1000 through one API process, next to the same ingest script driven
   directly by redis-py against the same Redis (pipelined single-observation
   calls, and one call per 1000), in the same run. Targets: batched ingest at
   least 50,000 observations/s per API process and at least half the raw rate.
2. Replication lag at a steady rate: time from an acknowledged POST on r1 until
   r2 has applied it, p50/p99.
3. Convergence: two replicas partitioned while 10,000 entities diverge (5,000
   written on each side, 1,000 on both), then healed; time until both hold
   byte-identical state. Target: within 2 s of heal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import redis.asyncio as aioredis  # noqa: E402

from bench.ap_load import WORLD, api_headers, api_rate, observation, packed_batch  # noqa: E402
from bench.rawhttp import Connection  # noqa: E402
from consistency import ap_keys as K  # noqa: E402
from consistency.ap_positions import Vector, at_least, parse_vector, stream_id  # noqa: E402
from consistency.ap_calls import ingest_calls  # noqa: E402
from consistency.ap_store import ALL, Observation, ReplicaStore  # noqa: E402
from consistency.replication import Replicator  # noqa: E402
from deploy.launcher import Deployment, Topology  # noqa: E402

async def raw_rate(url: str, per_call: int, pipeline: int, seconds: float, connections: int = 2) -> float:
    """The ingest script driven by redis-py alone: arguments built as the store builds them,
    before the clock starts, then pipelined over `connections` connections."""
    store = ReplicaStore(url, "r1", "raw-bench")
    script = store._scripts["ingest"]
    await script.registered_client.script_load(script.script)
    calls: list[list[tuple[list[str], list[Any]]]] = []  # per call of the old layout: the store's calls for it
    for _ in range(int(seconds * 120_000 / per_call) + 1):  # more than Redis can take in `seconds`
        groups = packed_batch(store, per_call)
        calls.append([(keys, args) for _, keys, args in
                      ingest_calls(groups, "r1", int(time.time() * 1000), store.partitions_per_call)])
    clients = [aioredis.Redis.from_url(url) for _ in range(connections)]
    done = 0
    deadline = time.perf_counter() + seconds

    async def drive(r: aioredis.Redis) -> None:
        nonlocal done
        while time.perf_counter() < deadline and calls:
            async with r.pipeline(transaction=False) as pipe:
                for _ in range(min(pipeline, len(calls))):
                    for keys, args in calls.pop():
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    done += per_call
                await pipe.execute()

    t0 = time.perf_counter()
    await asyncio.gather(*[drive(r) for r in clients])
    elapsed = time.perf_counter() - t0
    for r in clients:
        await r.aclose()
    await store.close()
    return done / elapsed


async def drain(d: Deployment) -> float:
    """Wait until r2 has applied all of r1's streams (the rate phase leaves a backlog)."""
    r1 = ReplicaStore(d.redis["r1"].url, "r1", "bench-drain")
    t0 = time.perf_counter()
    while not at_least(await r1.acked("r2"), await r1.last_ids()):
        await asyncio.sleep(0.05)
    await r1.close()
    return time.perf_counter() - t0


async def replication_lag(d: Deployment, rate: int, seconds: float) -> list[float]:
    host, port = "127.0.0.1", d.api["r1"].port
    await drain(d)
    r2 = ReplicaStore(d.redis["r2"].url, "r2", "bench-lag")
    conn = Connection(host, port)
    lags: list[float] = []
    pending: list[tuple[Vector, float]] = []  # (token's positions, when it was acknowledged)
    posting = True

    async def watch() -> None:
        """One poller for every pending token: reads r2's applied offsets of the partitions some token
        still waits for, every millisecond (a poller per token would load the machine it measures)."""
        seen: Vector = {}
        while posting or pending:
            wanted = {p for target, _ in pending for p, sid in target.items()
                      if stream_id(seen.get(p, "0-0")) < stream_id(sid)}
            if wanted:
                seen.update((await r2.applied("r1", sorted(wanted))).get("r1", {}))
                now = time.perf_counter()
                for item in [x for x in pending if at_least(seen, x[0])]:
                    lags.append((now - item[1]) * 1000)
                    pending.remove(item)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    batch, interval = max(1, rate // 100), 0.01
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t_next = time.perf_counter() + interval
        status, _, resp = await conn.request("POST", f"/v1/worlds/{WORLD}/observations",
                                             [observation(i) for i in range(batch)], api_headers(d))
        assert status == 202
        pending.append((parse_vector(resp["token"].split(":", 1)[1]), time.perf_counter()))
        await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
    posting = False
    await asyncio.wait_for(watcher, 30)
    await conn.close()
    await r2.close()
    return lags


async def convergence(entities: int) -> tuple[float, int]:
    with Deployment(Topology(etcd_members=0, regions=2, api=False)) as d:
        stores = {r: ReplicaStore(d.redis[r].url, r, f"node-{r}") for r in ("r1", "r2")}
        reps = {r: Replicator(stores[r], [ReplicaStore(d.redis[p].url, p, f"node-{r}") for p in stores if p != r],
                              housekeeping_s=3600) for r in stores}
        for rep in reps.values():
            for s in rep.shippers.values():
                s.pause()
            rep.start()
        half, overlap = entities // 2, entities // 10
        for r, lo, hi in (("r1", 0, half + overlap // 2), ("r2", half - overlap // 2, entities)):
            obs = [Observation(WORLD, f"e{i}", f"{r}-{i}", "cam", {"x": float(i), "side": r}) for i in range(lo, hi)]
            await stores[r].ingest(obs)
        t0 = time.perf_counter()
        for rep in reps.values():
            for s in rep.shippers.values():
                s.resume()
        while True:
            a1, a2 = await stores["r1"].applied("r2"), await stores["r2"].applied("r1")
            if at_least(a1.get("r2", {}), await stores["r2"].last_ids()) \
                    and at_least(a2.get("r1", {}), await stores["r1"].last_ids()):
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
        for p in ALL:
            assert await stores["r1"].digests(p) == await stores["r2"].digests(p), "replicas did not converge"
        r1 = aioredis.Redis.from_url(d.redis["r1"].url)
        n = sum([await r1.zcard(K.world_index_in(p, WORLD)) for p in ALL])
        for rep in reps.values():
            await rep.stop()
        await r1.aclose()
        for s in stores.values():
            await s.close()
        return elapsed, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each rate measurement")
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--ap-shards", default="", help="comma-separated master counts, e.g. 1,2,4: only the "
                    "ingest phase, per count, and the throughput model (bench/ap_shards.py)")
    args = ap.parse_args()
    if args.ap_shards:
        from bench import ap_shards
        ap_shards.run([int(n) for n in args.ap_shards.split(",")], args.seconds)
        return

    import httpx

    rows: list[tuple[str, float]] = []
    # Ingest is measured on one region: with a peer, the same two cores would also
    # be shipping and applying every delta, which is the lag phase's subject.
    with Deployment(Topology(etcd_members=1, regions=1)) as d:
        httpx.put(f"{d.api['r1'].url}/v1/worlds/{WORLD}", json={}, headers=api_headers(d)).raise_for_status()
        port = d.api["r1"].port

        async def rates() -> None:
            for batch, conc in ((1, 1), (1, 8), (1, 32), (100, 1), (100, 4), (100, 8), (1000, 1), (1000, 2), (1000, 4)):
                rows.append((f"API POST batch={batch} concurrency={conc}",
                             await api_rate("127.0.0.1", port, api_headers(d), batch, conc, args.seconds)))
            for per_call, pipe in ((1, 1000), (100, 10), (1000, 1)):
                rows.append((f"raw script, {per_call}/call by partition, {pipe}/pipeline",
                             await raw_rate(d.redis["r1"].url, per_call, pipe, args.seconds)))

        asyncio.run(rates())

    with Deployment(Topology(etcd_members=1, regions=2)) as d:
        httpx.put(f"{d.api['r1'].url}/v1/worlds/{WORLD}", json={}, headers=api_headers(d)).raise_for_status()
        lags = asyncio.run(replication_lag(d, rate=5000, seconds=args.seconds))

    conv, n = asyncio.run(convergence(args.entities))

    print("\nAP ingest (one API process, one Redis, no peer), observations/s")
    print(f"{'path':<48} {'obs/s':>10}")
    for name, rate in rows:
        print(f"{name:<48} {rate:>10,.0f}")
    best_api = max(r for n_, r in rows if n_.startswith("API"))
    best_raw = max(r for n_, r in rows if n_.startswith("raw"))
    print(f"\nbest batched API / best raw: {best_api:,.0f} / {best_raw:,.0f} = {best_api / best_raw:.2f}")
    print(f"target >= 50,000 obs/s per API process: {'met' if best_api >= 50_000 else 'NOT met'}; "
          f"target >= 0.5 of raw: {'met' if best_api >= 0.5 * best_raw else 'NOT met'}")
    print(f"\nreplication lag r1 -> r2 at 5,000 obs/s: p50 {statistics.median(lags):.1f} ms, "
          f"p99 {sorted(lags)[int(0.99 * len(lags))]:.1f} ms ({len(lags)} batches)")
    print(f"convergence after heal, {n:,} divergent entities: {conv:.2f} s "
          f"(target <= 2 s: {'met' if conv <= 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
