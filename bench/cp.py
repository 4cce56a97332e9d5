"""CP tier latency and throughput: through the API versus raw aetcd, same cluster, same run.

    python bench/cp.py                 # starts its own 3-member cluster and one API node
    python bench/cp.py --requests 2000 --concurrency 16

The API is driven by a minimal keep-alive HTTP/1.1 client (bench/rawhttp.py),
so the figures show the server's cost rather than an HTTP library's, and over
its gRPC port (GetParam, grpc.aio). The linearizable GET is also read from
etcd's own HTTP/JSON gateway (POST /v3/kv/range on each member, the same
client), the peer a user could call instead of this API. Prints, for a
linearizable GET and a compare-and-swap PUT, p50/p99 latency (sequential, one
request at a time, in --rounds blocks alternating the paths), throughput at
--concurrency, and each path's ratio to raw aetcd and to the gateway.
Targets: the API's p50 for a linearizable GET at most 1.5x raw aetcd's, and
at most 1.0x the gateway's, over HTTP or gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from bench.rawhttp import Connection  # noqa: E402

from consistency.cp_store import CPStore  # noqa: E402
from rpc.channel import achannel  # noqa: E402
from rpc.worldstate_pb2 import GetParamRequest  # noqa: E402
from rpc.worldstate_pb2_grpc import WorldstateStub  # noqa: E402
from deploy.launcher import Deployment, Topology  # noqa: E402

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


async def run(api_url: str, key: str | None, endpoints: list[str], n: int, concurrency: int,
              rounds: int, grpc_target: str | None = None) -> list[tuple[str, str, float, float, float]]:
    # Raw aetcd gets the same round-robin channel over every member that the
    # service uses, so both sides pay the same mix of leader and follower reads.
    store = CPStore(endpoints)
    await store.connect()
    raw = store._client
    assert raw is not None
    api_host, api_port = api_url.removeprefix("http://").split(":")
    conns = [Connection(api_host, int(api_port)) for _ in range(concurrency)]
    world = "bench"
    path = lambda w: f"/worldstate/v1/worlds/{world}/params/bench/k{w}".encode()  # noqa: E731
    revs: dict[tuple[str, int], int] = {}
    # Every request carries the key, as a real client's does: checking it is part of the API's cost.
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    write = {**auth, "Content-Type": "application/json"}

    for w in range(concurrency):
        status, _, body = await conns[w].request("PUT", f"/v1/worlds/{world}/params/bench/k{w}", {"v": 0}, write)
        assert status == 200, body
        revs[("api", w)] = revs[("raw", w)] = body["revision"]

    async def api_get(w: int, i: int) -> None:
        status, _, body = await conns[w].request("GET", f"/v1/worlds/{world}/params/bench/k{w}", None, auth)
        assert status == 200, body

    async def raw_get(w: int, i: int) -> None:
        assert await raw.get(path(w)) is not None

    # etcd's own HTTP/JSON gateway: the peer a user could call instead of this API.
    # Its range is linearizable unless asked for serializable, like the API's GET.
    # Connections spread over every member, as aetcd's channel and the service's are.
    members = [e.removeprefix("http://").split(":") for e in endpoints]
    gws = [[Connection(h, int(port)) for h, port in members] for _ in range(concurrency)]

    async def gateway_get(w: int, i: int) -> None:
        status, _, body = await gws[w][i % len(members)].request("POST", "/v3/kv/range", {"key": base64.b64encode(path(w)).decode()},
                                               {"Content-Type": "application/json"})
        assert status == 200 and body.get("kvs"), body

    # The same linearizable read over the node's gRPC port: one channel a worker, as the
    # HTTP side has one keep-alive connection a worker.
    chans = [achannel(grpc_target, key) for _ in range(concurrency)] if grpc_target else []
    stubs = [WorldstateStub(c) for c in chans]

    async def grpc_get(w: int, i: int) -> None:
        got = await stubs[w].GetParam(GetParamRequest(world=world, key=f"bench/k{w}"))
        assert got.revision > 0

    async def api_cas(w: int, i: int) -> None:
        status, _, body = await conns[w].request("PUT", f"/v1/worlds/{world}/params/bench/k{w}", {"v": i},
                                                 {**write, "If-Match": f'"{revs[("api", w)]}"'})
        assert status == 200, body
        revs[("api", w)] = revs[("raw", w)] = body["revision"]

    async def raw_cas(w: int, i: int) -> None:
        ok, responses = await raw.transaction(
            compare=[raw.transactions.mod(path(w)) == revs[("raw", w)]],
            success=[raw.transactions.put(path(w), b'{"v":%d}' % i)], failure=[])
        assert ok
        # a successful put's header revision is the key's new mod revision
        revs[("raw", w)] = revs[("api", w)] = responses[0].response_put.header.revision

    rows = []
    gets = (("raw aetcd", raw_get), ("etcd gateway", gateway_get), ("API", api_get))
    if stubs:
        gets += (("API gRPC", grpc_get),)
    for name, sides in (("GET linearizable", gets),
                        ("PUT CAS (If-Match)", (("raw aetcd", raw_cas), ("API", api_cas)))):
        lat: dict[str, list[float]] = {label: [] for label, _ in sides}
        # Alternate the two sides' blocks (ABAB...) so a drift in the machine's load
        # lands on both rather than on whichever ran second.
        for _ in range(rounds):
            for label, op in sides:
                await latency(op, 50)  # warm up connections and caches
                lat[label] += await latency(op, n // rounds)
        for label, op in sides:
            rate = await throughput(op, n, concurrency)
            rows.append((name, label, statistics.median(lat[label]), pct(lat[label], 0.99), rate))
    for c in conns + [c for per_worker in gws for c in per_worker]:
        await c.close()
    for ch in chans:
        await ch.close()
    await store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3,
                    help="latency: split --requests into this many alternating raw/API blocks")
    ap.add_argument("--api", help="use a running API node instead of starting a cluster")
    ap.add_argument("--etcd", help="the same cluster's etcd endpoints, host:port,host:port (with --api)")
    ap.add_argument("--grpc", help="the same node's gRPC target, host:port (with --api; omit to skip gRPC)")
    ap.add_argument("--key", default=os.environ.get("WORLDSTATE_KEY"),
                    help="an API key with read and params:write on world 'bench' (with --api; $WORLDSTATE_KEY)")
    args = ap.parse_args()

    deployment = None
    if args.api:
        api_url, endpoints, key, grpc_target = args.api, args.etcd.split(","), args.key, args.grpc
    else:
        deployment = Deployment(Topology(etcd_members=3, regions=1))
        deployment.start()
        api_url, endpoints, key = deployment.api["r1"].url, deployment.etcd_endpoints, deployment.admin_key
        grpc_target = deployment.api["r1"].grpc
    try:
        rows = asyncio.run(run(api_url, key, endpoints, args.requests, args.concurrency, args.rounds, grpc_target))
    finally:
        if deployment:
            deployment.stop()

    print(f"\nCP tier, {args.requests} requests; latency sequential in {args.rounds} alternating blocks, "
          f"throughput at concurrency {args.concurrency}")
    print(f"{'operation':<20} {'path':<13} {'p50 ms':>8} {'p99 ms':>8} {'ops/s':>8} {'p50 vs raw':>11} "
          f"{'p50 vs gateway':>15}")
    p50s = {(name, label): p50 for name, label, p50, _, _ in rows}
    for name, label, p50, p99, rate in rows:
        raw = f"{p50 / p50s[(name, 'raw aetcd')]:.2f}x" if label != "raw aetcd" else ""
        gw = p50s.get((name, "etcd gateway"))
        vs_gw = f"{p50 / gw:.2f}x" if gw and label not in ("raw aetcd", "etcd gateway") else ""
        print(f"{name:<20} {label:<13} {p50:>8.2f} {p99:>8.2f} {rate:>8.0f} {raw:>11} {vs_gw:>15}")
    get = "GET linearizable"
    for label in [lb for n, lb in p50s if n == get and lb not in ("raw aetcd", "etcd gateway")]:
        r_raw = p50s[(get, label)] / p50s[(get, "raw aetcd")]
        r_gw = p50s[(get, label)] / p50s[(get, "etcd gateway")]
        print(f"\n{label}: linearizable GET p50 {r_raw:.2f}x raw aetcd (target <= 1.5x: "
              f"{'met' if r_raw <= 1.5 else 'NOT met'}), {r_gw:.2f}x etcd's HTTP gateway (target <= 1.0x: "
              f"{'met' if r_gw <= 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
