"""Observation ingest over gRPC streaming, over batched REST, and raw, in the same run.

    python bench/ingest.py [--seconds 3] [--batch 1000]

One region, one API process, one Redis (as bench/ap.py's ingest phase). Three ways in:

- gRPC: `Observe` streams, each sending batches of --batch observations and reading one
  ack per batch, at 1, 2 and 4 concurrent streams, first one batch at a time (as a REST
  connection sends), then with --window batches sent ahead of their acks (what a stream
  is for; the node still applies a stream's batches one after another, in order);
- REST: POST /observations with a JSON array of --batch, at concurrency 1, 2 and 4
  (bench/ap.py's keep-alive client);
- raw: the same ingest.lua driven by redis-py alone, --batch observations a call, calls
  pipelined over 2 connections: what Redis itself takes, with no service in front.

Request bodies are built before each clock starts, so the load generator, which shares
the machine's cores, costs as little as it can. Targets: gRPC >= REST, gRPC >= 0.8x raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import httpx  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402

from bench.ap import WORLD, api_headers, api_rate, observation, raw_rate  # noqa: E402
from deploy.launcher import Deployment, Topology  # noqa: E402
from rpc import worldstate_pb2 as pb  # noqa: E402
from rpc.channel import aconnect  # noqa: E402


def grpc_batch(batch: int) -> pb.ObserveRequest:
    obs = []
    for j in range(batch):
        o = observation(j)
        fields = {k: struct_pb2.Value(number_value=v) for k, v in o["fields"].items()}  # type: ignore[union-attr]
        obs.append(pb.Observation(event_id=str(o["event_id"]), entity=str(o["entity"]), source=str(o["source"]),
                                  fields=fields))
    return pb.ObserveRequest(world=WORLD, observations=obs)


async def grpc_rate(target: str, key: str | None, batch: int, streams: int, seconds: float, window: int) -> float:
    """Observations/s acknowledged over `streams` concurrent Observe streams, each keeping
    up to `window` batches sent and not yet acknowledged (1: send, wait for the ack, send)."""
    per_stream = int(seconds * 60_000 / batch) + window + 1  # more than the node can take in `seconds`
    requests = [[grpc_batch(batch) for _ in range(per_stream)] for _ in range(streams)]
    done = 0
    deadline = 0.0
    async with aconnect(target, key) as (_, stub):

        async def one(reqs: list[pb.ObserveRequest]) -> None:
            nonlocal done
            queue: asyncio.Queue[pb.ObserveRequest | None] = asyncio.Queue()

            async def gen():  # type: ignore[no-untyped-def]
                while (item := await queue.get()) is not None:
                    yield item

            call = stub.Observe(gen())
            sent = 0
            for _ in range(window):
                await queue.put(reqs.pop())
                sent += 1
            async for ack in call:
                assert ack.accepted == batch, ack
                done += batch
                sent -= 1
                if time.perf_counter() < deadline and reqs:
                    await queue.put(reqs.pop())
                    sent += 1
                elif sent == 0:
                    await queue.put(None)

        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in requests))
        return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each rate measurement")
    ap.add_argument("--batch", type=int, default=1000, help="observations a batch (a message, a POST, a call)")
    ap.add_argument("--window", type=int, default=4,
                    help="gRPC: batches a stream sends ahead of its acks (also measured: 1, one at a time)")
    args = ap.parse_args()

    rows: list[tuple[str, float]] = []
    with Deployment(Topology(etcd_members=1, regions=1)) as d:
        httpx.put(f"{d.api['r1'].url}/v1/worlds/{WORLD}", json={}, headers=api_headers(d)).raise_for_status()
        node = d.api["r1"]

        async def rates() -> None:
            # Alternate the paths at each concurrency so a drift in the machine's load lands on all.
            for conc in (1, 2, 4):
                for window in (1, args.window):
                    rows.append((f"gRPC Observe, {conc} stream(s), window {window}",
                                 await grpc_rate(node.grpc, d.admin_key, args.batch, conc, args.seconds, window)))
                rows.append((f"REST POST, concurrency {conc}",
                             await api_rate("127.0.0.1", node.port, api_headers(d), args.batch, conc, args.seconds)))
            rows.append(("raw ingest.lua, 1 call a pipeline, 2 conns",
                         await raw_rate(d.redis["r1"].url, args.batch, 1, args.seconds)))

        asyncio.run(rates())

    print(f"\nIngest, batches of {args.batch} (one API process, one Redis), observations/s")
    print(f"{'path':<48} {'obs/s':>10}")
    for name, rate in rows:
        print(f"{name:<48} {rate:>10,.0f}")
    best = {p: max(r for n, r in rows if n.startswith(p)) for p in ("gRPC", "REST", "raw")}
    print(f"\nbest gRPC / best REST: {best['gRPC'] / best['REST']:.2f} (target >= 1: "
          f"{'met' if best['gRPC'] >= best['REST'] else 'NOT met'})")
    print(f"best gRPC / raw: {best['gRPC'] / best['raw']:.2f} (target >= 0.8: "
          f"{'met' if best['gRPC'] >= 0.8 * best['raw'] else 'NOT met'})")


if __name__ == "__main__":
    main()
