"""AP ingest through ReplicaStore alone: wall rate, Redis CPU and client CPU per observation.

    python bench/ap_ingest_cpu.py [--entities 1000]

One fresh Redis (as `worldstate up` starts it: AOF, appendfsync always), no API, no peer.
`ReplicaStore.ingest` in batches of 1000, 100 and 1 (1000 entities, four fields each, as
bench/ap.py posts). Redis CPU (INFO cpu, user + sys, fsync included) and this process's CPU
per observation say where the time goes; they still move with the machine's load, so compare
two commits by running this on each, alternately, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from consistency.ap_store import Observation, ReplicaStore  # noqa: E402
from deploy.launcher import Deployment, Topology  # noqa: E402


def redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(url: str, batch: int, total: int, entities: int) -> tuple[float, float, float]:
    """(observations/s, Redis CPU us/observation, client CPU us/observation)."""
    store = ReplicaStore(url, "r1", "bench")
    r = redis.Redis.from_url(url)
    await store.ingest([Observation("bench", "warm", f"warm-{batch}", "cam", {"x": 1.0})])  # first-use setup
    done = 0
    c0, t0, p0 = redis_cpu_s(r), time.perf_counter(), time.process_time()
    while done < total:
        obs = [Observation("bench", f"body{(done + j) % entities}", f"ev{batch}-{done + j}", "cam",
                           {"x": 0.5 * j, "y": 1.25, "vx": -0.5, "vy": 2.0}) for j in range(batch)]
        await store.ingest(obs)
        done += batch
    wall, redis_s, client_s = time.perf_counter() - t0, redis_cpu_s(r) - c0, time.process_time() - p0
    await store.close()
    r.close()
    return done / wall, redis_s / done * 1e6, client_s / done * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=1000)
    args = ap.parse_args()
    with Deployment(Topology(etcd_members=0, regions=1, api=False)) as d:
        url = d.redis["r1"].url
        print(f"{'batch':>6} {'obs/s':>10} {'Redis CPU us/obs':>17} {'client CPU us/obs':>18}")
        for batch, total in ((1000, 40_000), (100, 20_000), (1, 3_000)):
            rate, redis_us, client_us = asyncio.run(measure(url, batch, total, args.entities))
            print(f"{batch:>6} {rate:>10,.0f} {redis_us:>17.1f} {client_us:>18.1f}")


if __name__ == "__main__":
    main()
