"""A region's ingest on 1, 2, 4 Redis masters, against raw pipelined scripts on the same masters,
and the throughput model for N machines built from the measured per-observation costs.

    python bench/ap.py --ap-shards 1,2,4 [--seconds 3]

For each shard count: a deployment of one etcd member and two regions, each AP replica one Redis
(1) or a Redis Cluster of N masters (`worldstate up --ap-shards N`), an API node per region. Then,
posting to r1 only:

- API: POSTs of 100 observations from 8 connections and of 1000 from 2 (bench/ap.py's load
  generator), observations/s;
- raw: the store's own ingest.lua calls (the same arguments: one partition a call on a cluster,
  64 on one Redis), pre-built, pipelined by redis-py straight to the master owning each call's
  slot: the backend without the service (r1's shipper still runs, as it does under the API rows);
- costs, from CPU counters rather than the clock (so other load on the machine moves them less),
  per observation posted, from the start of a load until r2 has applied all of it: r1's masters
  (`INFO cpu`, user + sys, summed: ingest, AOF, serving the shipper's reads), r2's masters
  (applying), r1's API process (/proc utime + stime: the POSTs and shipping to r2).

Two cores cannot show N masters scaling (API nodes, masters and this load generator share them),
so the table ends with the model: a master is one core; 64 partitions over N masters give the
busiest ceil(64/N) of them; with R regions each posting x observations/s, a master of a region
spends (home_us + (R - 1) * peer_us) / N per observation, and an API process api_us. So a region
ingests about min(N * 1e6 / (home_us + (R-1) * peer_us) * (64/N) / ceil(64/N), A * 1e6 / api_us).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.cluster import key_slot

from bench.ap_load import WORLD, api_headers, api_rate, packed_batch
from consistency import ap_keys as K
from consistency.ap_calls import ingest_calls
from consistency.ap_positions import at_least
from consistency.ap_store import ReplicaStore
from deploy.launcher import Deployment, Topology

LOADS = ((100, 8), (1000, 2))  # (batch, concurrency) of the API rows
Pending = list[tuple[list[str], list[Any], int]]  # script calls: KEYS, ARGV, observations carried


def masters(d: Deployment, region: str) -> list[tuple[str, int]]:
    """(host, port) of every master of `region`'s AP replica."""
    if region in d.clusters:
        return [(n.host, n.port) for n in d.clusters[region].current_masters()]
    node = d.redis[region]
    return [(node.host, node.port)]


def store_url(d: Deployment, region: str) -> str:
    return d.clusters[region].store_url if region in d.clusters else d.redis[region].url


async def drained(d: Deployment, timeout: float = 120.0) -> None:
    """Until r2 has applied everything r1 holds (its shipper runs in r1's API node)."""
    r1 = ReplicaStore(store_url(d, "r1"), "r1", "bench-drain")
    deadline = time.perf_counter() + timeout
    while not at_least(await r1.acked("r2"), await r1.last_ids()):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"r2 had not applied r1's writes {timeout:.0f} s after the load stopped")
        await asyncio.sleep(0.05)
    await r1.close()


async def redis_usec(nodes: list[tuple[str, int]]) -> float:
    """CPU the Redis processes of `nodes` have used so far (INFO cpu, user + sys: scripts, AOF
    writes, replies), in microseconds. Not INFO commandstats: its usec is the wall time a command
    took, which grows when a loaded machine takes the core away mid-script."""
    total = 0.0
    for host, port in nodes:
        r = aioredis.Redis(host=host, port=port)
        info = await r.info("cpu")
        total += (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1e6
        await r.aclose()
    return total


def cpu_usec(pid: int) -> float:
    """utime + stime of a process, in microseconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")


async def slot_owner(nodes: list[tuple[str, int]]) -> dict[int, int]:
    """slot -> index into `nodes` of the master serving it (one Redis: every slot to node 0)."""
    if len(nodes) == 1:
        return {}
    r = aioredis.Redis(host=nodes[0][0], port=nodes[0][1])
    ranges = await r.execute_command("CLUSTER", "SLOTS")
    await r.aclose()
    ports = [p for _, p in nodes]
    owner: dict[int, int] = {}
    for lo, hi, master, *_ in ranges:
        for slot in range(int(lo), int(hi) + 1):
            owner[slot] = ports.index(int(master[1]))
    return owner


async def raw_rate(nodes: list[tuple[str, int]], per_call: int, seconds: float,
                   connections_per_node: int = 2, pipeline: int = 10) -> float:
    """ingest.lua driven without the service: the store's calls for batches of `per_call`
    observations, routed to the master of each call's slot, pipelined per master."""
    ppc = K.PARTITIONS if len(nodes) == 1 else 1
    store = ReplicaStore(f"redis://{nodes[0][0]}:{nodes[0][1]}/0", "r1", "raw-bench")  # the script source and arguments
    script = store._scripts["ingest"]
    owner = await slot_owner(nodes)
    queues: list[list[Pending]] = [[] for _ in nodes]  # per node: pipelines of calls
    per_node: list[Pending] = [[] for _ in nodes]
    for _ in range(int(seconds * 150_000 / per_call) + 1):  # more than the masters can take in `seconds`
        groups = packed_batch(store, per_call)
        for segments, keys, args in ingest_calls(groups, "r1", int(time.time() * 1000), ppc):
            i = owner.get(key_slot(keys[0].encode()), 0)
            per_node[i].append((keys, args, sum(end - start for _, start, end in segments)))
            if len(per_node[i]) == pipeline:
                queues[i].append(per_node[i])
                per_node[i] = []
    await store.close()
    done = 0
    deadline = time.perf_counter() + seconds

    async def drive(r: aioredis.Redis, queue: list[Pending]) -> None:
        nonlocal done
        while time.perf_counter() < deadline and queue:
            calls = queue.pop()
            async with r.pipeline(transaction=False) as pipe:
                for keys, args, _ in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                await pipe.execute()
            done += sum(n for _, _, n in calls)

    clients: list[tuple[aioredis.Redis, list[Any]]] = []
    for (host, port), queue in zip(nodes, queues):
        for _ in range(connections_per_node):
            r = aioredis.Redis(host=host, port=port)
            await r.script_load(script.script)
            clients.append((r, queue))
    t0 = time.perf_counter()
    await asyncio.gather(*[drive(r, q) for r, q in clients])
    elapsed = time.perf_counter() - t0
    for r, _ in clients:
        await r.aclose()
    return done / elapsed


async def measure(d: Deployment, seconds: float) -> dict[str, float]:
    """Rates and CPU per observation posted to r1: r1's masters (ingest, and serving its shipper's
    reads), r2's masters (applying them), r1's API process (the POSTs, and shipping to r2)."""
    home, peer, api = masters(d, "r1"), masters(d, "r2"), d.api["r1"]
    out: dict[str, float] = {}
    for batch, conc in LOADS:
        await drained(d)
        home0, peer0, api0 = await redis_usec(home), await redis_usec(peer), cpu_usec(api.pid or 0)
        t0 = time.perf_counter()
        rate = await api_rate(api.host, api.port, api_headers(d), batch, conc, seconds)
        n = rate * (time.perf_counter() - t0)
        await drained(d)
        out[f"api{batch}"] = rate
        out[f"home_us{batch}"] = (await redis_usec(home) - home0) / n
        out[f"peer_us{batch}"] = (await redis_usec(peer) - peer0) / n
        out[f"api_us{batch}"] = (cpu_usec(api.pid or 0) - api0) / n
    await drained(d)
    out["raw"] = await raw_rate(home, 1000, seconds)
    return out


def model(n: int, regions: int, r: dict[str, float], apis: int) -> float:
    """Observations/s one region takes, every one of `regions` regions posting at that rate: a
    master spends home_us on each of its region's observations and peer_us on each of every other
    region's; each API process spends api_us (its shipping to one peer included, so a low bound
    for 2 regions only)."""
    busiest = math.ceil(K.PARTITIONS / n) / (K.PARTITIONS / n)
    per_obs = r["home_us1000"] + (regions - 1) * r["peer_us1000"]
    return min(n * 1e6 / per_obs / busiest, apis * 1e6 / r["api_us1000"])


def run(shards: list[int], seconds: float) -> None:
    results: dict[int, dict[str, float]] = {}
    for n in shards:
        with Deployment(Topology(etcd_members=1, regions=2, ap_shards=n)) as d:
            httpx.put(f"{d.api['r1'].url}/v1/worlds/{WORLD}", json={}, headers=api_headers(d)).raise_for_status()
            results[n] = asyncio.run(measure(d, seconds))
    print("\nAP ingest posted to r1 of 2 regions, by masters per region (one API process a region; "
          "everything on this machine's cores)")
    print(f"{'masters':<20} {'API b=100 c=8':>14} {'API b=1000 c=2':>15} {'raw 1000/call':>14} {'API/raw':>8} "
          f"{'r1 Redis us':>12} {'r2 Redis us':>12} {'r1 API us':>10}")
    for n, r in results.items():
        layout = "1 (one Redis)" if n == 1 else f"{n} (Redis Cluster)"
        best = max(r["api100"], r["api1000"])
        print(f"{layout:<20} {r['api100']:>14,.0f} {r['api1000']:>15,.0f} {r['raw']:>14,.0f} {best / r['raw']:>8.2f} "
              f"{r['home_us1000']:>12.1f} {r['peer_us1000']:>12.1f} {r['api_us1000']:>10.1f}")
    print("(us: CPU microseconds per observation of the batches of 1000, summed over the region's masters)")
    print("\nModel (module docstring), observations/s per region, every region posting as much; "
          "a core per master and per API process")
    print(f"{'costs measured on':<20} {'N':>3} {'R=2, A=1':>10} {'R=2, A=N':>10} {'R=3, A=N':>10} {'R=3, A=2N':>10}")
    for measured, r in results.items():
        for n in (1, 2, 4, 8, 16):
            row = [model(n, 2, r, 1), model(n, 2, r, n), model(n, 3, r, n), model(n, 3, r, 2 * n)]
            print(f"{str(measured) + ' master(s)':<20} {n:>3} " + " ".join(f"{x:>10,.0f}" for x in row))
