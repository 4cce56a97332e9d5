"""CP tier latency and throughput: through the API versus raw aetcd, same cluster, same run.

    python bench/cp.py                 # starts its own 3-member cluster and one API node
    python bench/cp.py --requests 2000 --concurrency 16

Prints p50/p99 latency (sequential, one request at a time) and throughput (at
--concurrency) for a linearizable GET and a compare-and-swap PUT, and the
API/raw ratio. Target: the API's p50 for a linearizable GET at most 1.5x raw aetcd's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import aetcd  # noqa: E402
import httpx  # noqa: E402

from service.launcher import Deployment, Topology  # noqa: E402

Op = Callable[[int, int], Awaitable[None]]  # (worker, i)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def latency(op: Op, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await op(0, i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def throughput(op: Op, n: int, concurrency: int) -> float:
    async def worker(w: int) -> None:
        for i in range(n // concurrency):
            await op(w, i)

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    return (n // concurrency) * concurrency / (time.perf_counter() - t0)


async def run(api_url: str, endpoint: str, n: int, concurrency: int) -> list[tuple[str, str, float, float, float]]:
    host, port = endpoint.split(":")
    raw = aetcd.Client(host=host, port=int(port))
    await raw.connect()
    http = httpx.AsyncClient(base_url=api_url, timeout=30, limits=httpx.Limits(max_connections=concurrency))
    world = "bench"
    path = lambda w: f"/worldstate/v1/worlds/{world}/params/bench/k{w}".encode()  # noqa: E731
    revs: dict[tuple[str, int], int] = {}

    for w in range(concurrency):
        r = await http.put(f"/v1/worlds/{world}/params/bench/k{w}", json={"v": 0})
        r.raise_for_status()
        revs[("api", w)] = r.json()["revision"]
        revs[("raw", w)] = revs[("api", w)]

    async def api_get(w: int, i: int) -> None:
        r = await http.get(f"/v1/worlds/{world}/params/bench/k{w}")
        assert r.status_code == 200

    async def raw_get(w: int, i: int) -> None:
        assert await raw.get(path(w)) is not None

    async def api_cas(w: int, i: int) -> None:
        r = await http.put(f"/v1/worlds/{world}/params/bench/k{w}", json={"v": i},
                           headers={"If-Match": f'"{revs[("api", w)]}"'})
        assert r.status_code == 200, r.text
        revs[("api", w)] = r.json()["revision"]
        revs[("raw", w)] = revs[("api", w)]

    async def raw_cas(w: int, i: int) -> None:
        ok, _ = await raw.transaction(
            compare=[raw.transactions.mod(path(w)) == revs[("raw", w)]],
            success=[raw.transactions.put(path(w), b'{"v":%d}' % i)], failure=[])
        assert ok
        # the new mod revision is the store revision of the txn; read it back cheaply
        got = await raw.get(path(w))
        revs[("raw", w)] = got.mod_revision
        revs[("api", w)] = got.mod_revision

    rows = []
    for name, api_op, raw_op in (("GET linearizable", api_get, raw_get), ("PUT CAS (If-Match)", api_cas, raw_cas)):
        for label, op in (("raw aetcd", raw_op), ("API", api_op)):
            await latency(op, 50)  # warm up connections and caches
            lat = await latency(op, n)
            rate = await throughput(op, n, concurrency)
            rows.append((name, label, statistics.median(lat), pct(lat, 0.99), rate))
    await http.aclose()
    await raw.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--api", help="use a running API node instead of starting a cluster")
    ap.add_argument("--etcd", help="an etcd client endpoint host:port of the same cluster (with --api)")
    args = ap.parse_args()

    deployment = None
    if args.api:
        api_url, endpoint = args.api, args.etcd
    else:
        deployment = Deployment(Topology(etcd_members=3, regions=1))
        deployment.start()
        api_url, endpoint = deployment.api["r1"].url, deployment.etcd_endpoints[0]
    try:
        rows = asyncio.run(run(api_url, endpoint, args.requests, args.concurrency))
    finally:
        if deployment:
            deployment.stop()

    print(f"\nCP tier, {args.requests} requests; latency sequential, throughput at concurrency {args.concurrency}")
    print(f"{'operation':<20} {'path':<10} {'p50 ms':>8} {'p99 ms':>8} {'ops/s':>8} {'p50 vs raw':>11}")
    base: dict[str, float] = {}
    for name, label, p50, p99, rate in rows:
        ratio = "" if label == "raw aetcd" else f"{p50 / base[name]:.2f}x"
        base.setdefault(name, p50)
        print(f"{name:<20} {label:<10} {p50:>8.2f} {p99:>8.2f} {rate:>8.0f} {ratio:>11}")
    get_ratio = rows[1][2] / rows[0][2]
    print(f"\ntarget: API p50 for a linearizable GET <= 1.5x raw aetcd: {get_ratio:.2f}x "
          f"{'(met)' if get_ratio <= 1.5 else '(NOT met)'}")


if __name__ == "__main__":
    main()
