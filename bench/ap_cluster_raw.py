"""Raw ceiling of a clustered region: pipelined EVALSHA of a merge-shaped script on 1, 2, 4 masters.

The backend figure issue #17's `bench/ap.py --ap-shards` compares the service against: no
service, no cluster-client routing, one driver process per master sending pre-encoded pipelines of EVALSHA
straight to the master that owns each partition's slot. The script has the shape of the merge
scripts (consistency/lua/ingest.lua): one entity hash HSET and one XADD on the partition's
stream, both under the partition's hash tag `{p<k>}`, so it touches one slot.

    python -m bench.ap_cluster_raw --masters 1,2,4 --seconds 5

On a machine with fewer cores than masters + drivers the total cannot scale; the per-master
column is the measured cost the written model for N machines starts from.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import tempfile
import time
from pathlib import Path

import redis
from redis.cluster import key_slot

from deploy.redis_cluster import RedisCluster

MERGE_LIKE = """
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'hlc', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', 'e', KEYS[1], 'v', ARGV[1])
return 1
"""


def partition_keys(partition: int, entity: int) -> tuple[str, str]:
    tag = f"{{p{partition}}}"
    return f"{tag}:e:{entity}", f"{tag}:stream"


def owners(cluster: RedisCluster, partitions: int) -> dict[int, list[int]]:
    """master port -> the partitions whose slot it serves."""
    with cluster.nodes[0].admin() as r:
        ranges = [(int(lo), int(hi), int(m[1])) for lo, hi, m, *_ in r.execute_command("CLUSTER", "SLOTS")]
    found: dict[int, list[int]] = {}
    for p in range(partitions):
        slot = key_slot(partition_keys(p, 0)[1].encode())
        port = next(port for lo, hi, port in ranges if lo <= slot <= hi)
        found.setdefault(port, []).append(p)
    return found


def _resp(*parts: object) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        b = str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _batches(sha: str, parts: list[int], depth: int, n: int = 16) -> list[bytes]:
    """`n` pipelines of `depth` EVALSHA, encoded once: the driver's own cost stays a socket write
    and a read, so the figure is Redis's, not redis-py's (which peaked near 35k calls/s here)."""
    out, entity = [], 0
    for _ in range(n):
        cmds = []
        for _ in range(depth):
            p = parts[entity % len(parts)]
            cmds.append(_resp("EVALSHA", sha, 2, *partition_keys(p, entity % 1000), entity, f"{entity:016x}"))
            entity += 1
        out.append(b"".join(cmds))
    return out


def _drive(port: int, sha: str, parts: list[int], seconds: float, depth: int, out: multiprocessing.Queue) -> None:
    batches = _batches(sha, parts, depth)
    expect = b":1\r\n" * depth  # the script returns 1; anything else (an error) stops the run
    with socket.create_connection(("127.0.0.1", port)) as s:
        done, i, start = 0, 0, time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            s.sendall(batches[i % len(batches)])
            got = b""
            while len(got) < len(expect):
                chunk = s.recv(len(expect) - len(got))
                if not chunk:
                    raise ConnectionError(f"redis on {port} closed the connection")
                got += chunk
            if got != expect:
                raise RuntimeError(f"redis on {port} answered {got[:200]!r}")
            done += depth
            i += 1
    out.put((done, time.monotonic() - start))


def _cpu(port: int) -> float:
    with redis.Redis(port=port) as r:
        info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(masters: int, seconds: float, partitions: int, depth: int,
            run_dir: Path) -> tuple[float, list[float], float]:
    """Total ops/s, each master's, and Redis CPU microseconds per call (summed over masters),
    with one driver process per master for `seconds`."""
    with RedisCluster("bench", run_dir / f"m{masters}", masters=masters) as cluster:
        by_port = owners(cluster, partitions)
        shas = {}
        for port in by_port:
            with redis.Redis(port=port) as r:
                shas[port] = r.script_load(MERGE_LIKE)
        ctx = multiprocessing.get_context("spawn")
        out: multiprocessing.Queue = ctx.Queue()
        drivers = [ctx.Process(target=_drive, args=(port, shas[port], parts, seconds, depth, out))
                   for port, parts in by_port.items()]
        cpu_before = sum(_cpu(port) for port in by_port)
        for d in drivers:
            d.start()
        results = [out.get(timeout=seconds + 60) for _ in drivers]
        for d in drivers:
            d.join()
        cpu = sum(_cpu(port) for port in by_port) - cpu_before
    per_master = [n / s for n, s in results]
    calls = sum(n for n, _ in results)
    return sum(per_master), per_master, cpu / calls * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--masters", default="1,2,4", help="comma-separated master counts")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--partitions", type=int, default=64, help="logical partitions {p0}..{pP-1}")
    ap.add_argument("--pipeline", type=int, default=64, help="EVALSHA per pipeline round trip")
    ap.add_argument("--smoke", action="store_true", help="1 and 2 masters, half a second each")
    args = ap.parse_args(argv)
    counts = [int(m) for m in args.masters.split(",")]
    if args.smoke:
        counts, args.seconds, args.partitions = [1, 2], 0.5, 8
    print(f"# pipelined EVALSHA (HSET+XADD on one {{p<k>}} partition), {args.partitions} partitions, "
          f"pipeline {args.pipeline}, {args.seconds}s, one driver per master")
    print(f"{'masters':>7} {'ops/s':>10} {'per master':>12} {'redis us/op':>12}   (each master)")
    with tempfile.TemporaryDirectory(prefix="ap-cluster-raw-") as tmp:
        for m in counts:
            total, each, us = measure(m, args.seconds, args.partitions, args.pipeline, Path(tmp))
            print(f"{m:>7} {total:>10.0f} {total / m:>12.0f} {us:>12.1f}   ({', '.join(f'{x:.0f}' for x in each)})",
                  flush=True)


if __name__ == "__main__":
    main()
