"""Predict throughput and latency: micro-batched vs one by one vs plain torch
forward calls on the same model in the same run, and (--http) the same
queries through a local deployment's POST /v1/worlds/{w}/predict.

    python bench/predict.py                      # newest model in checkpoints/, else a tiny one
    python bench/predict.py --checkpoint HASH --checkpoint-dir DIR --concurrency 1 8 32 128
    python bench/predict.py --http               # also start etcd + Redis + a node and query it

Rows, for each concurrency C:
  torch b=1          plain torch: WorldModel.predict_prepared on one world per call, calls in a row
                     (what C clients get from one model thread without batching)
  torch b=C          plain torch given C worlds in one call: batching's ceiling
  one-by-one         C concurrent asyncio clients, every query its own forward pass
  micro-batched      C concurrent clients through MicroBatcher
  http micro-batched (--http) C concurrent HTTP clients against one node
  http one-by-one    (--http) the same against a node with WORLDSTATE_PREDICT_MAX_BATCH=1
"vs b=1" is a row's throughput over torch b=1's, measured next to it; the target is
micro-batched >= 0.9x at every C. With --http, "predict after a plan" shows the
node's lone-query predict p50 before and after a POST /plan (they should match).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world_model.batching import MicroBatcher, set_torch_threads  # noqa: E402
from world_model.config import Physics, tiny_config  # noqa: E402
from world_model.inference import WorldModel  # noqa: E402
from world_model.train import MODEL_POINTER, train  # noqa: E402

PHYS = Physics()
Row = tuple[str, int, float, float, float, float]  # mode, C, q/s, p50 ms, p99 ms, mean batch


def load_model(args: argparse.Namespace) -> tuple[WorldModel, str, str]:
    """The model, its digest and the checkpoint directory holding its blob."""
    ckdir = Path(args.checkpoint_dir)
    digest = args.checkpoint
    if digest == "latest" and (ckdir / MODEL_POINTER).exists():
        digest = (ckdir / MODEL_POINTER).read_text().strip()
    if digest == "latest":
        print("no trained model found; training a tiny one for the benchmark", file=sys.stderr)
        ckdir = Path(tempfile.mkdtemp(prefix="wm-bench-"))
        cfg = tiny_config()
        cfg.train.checkpoint_dir = str(ckdir)
        digest = train(cfg, progress=False).hash
    return WorldModel.load(digest, str(ckdir), args.device), digest, str(ckdir)


def queries(n: int, horizon: int, seed: int) -> list[tuple[np.ndarray, Physics, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 6))
        s = np.column_stack([rng.uniform(1, 9, (k, 2)), rng.uniform(-3, 3, (k, 2)),
                             rng.uniform(0.3, 0.7, k), rng.uniform(0.5, 2, k)])
        out.append((s, PHYS, horizon))
    return out


def summary(lat: list[float], n: int, secs: float) -> tuple[float, float, float]:
    a = np.asarray(lat) * 1000
    return n / secs, float(np.percentile(a, 50)), float(np.percentile(a, 99))


Run = tuple[list[float], int, float, int]  # latencies (s), queries, seconds, batches


def bench_torch(model: WorldModel, qs: list, batch: int) -> Run:
    """Plain torch calls on prepared tensors: no validation, no asyncio, no thread hop."""
    prepared = [model.prepare_predict(*q) for q in qs]
    groups = [prepared[i:i + batch] for i in range(0, len(prepared) - batch + 1, batch)]
    model.predict_prepared(groups[0])  # warm-up
    lat = []
    t0 = time.perf_counter()
    for g in groups:
        t = time.perf_counter()
        model.predict_prepared(g)
        lat.append(time.perf_counter() - t)
    return lat, len(groups) * batch, time.perf_counter() - t0, len(groups)


async def bench_clients(model: WorldModel, qs: list, conc: int, max_batch: int, wait_ms: float) -> Run:
    lat: list[float] = []
    it = iter(qs)
    async with MicroBatcher(model, max_batch_size=max_batch, max_wait_ms=wait_ms) as mb:
        await mb.predict(*qs[0])  # warm-up
        mb.stats.queries = mb.stats.batches = 0

        async def client() -> None:
            for q in it:
                t = time.perf_counter()
                await mb.predict(*q)
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(conc)))
        secs = time.perf_counter() - t0
    return lat, len(lat), secs, mb.stats.batches


def in_process(model: WorldModel, a: argparse.Namespace, c: int) -> list[Row]:
    """Every mode on the same queries, in `rounds` alternating blocks: the machine's other load
    drifts over a run, and alternating spreads it evenly over the modes being compared."""
    modes = {"torch b=1": lambda qs: bench_torch(model, qs, 1)}
    if c > 1:
        modes["torch b=C"] = lambda qs: bench_torch(model, qs, c)
    modes["one-by-one"] = lambda qs: asyncio.run(bench_clients(model, qs, c, 1, 0.0))
    modes["micro-batched"] = lambda qs: asyncio.run(bench_clients(model, qs, c, a.max_batch, a.max_wait_ms))
    qs = queries(a.queries, a.horizon, seed=c)
    block = len(qs) // a.rounds
    acc: dict[str, Run] = {m: ([], 0, 0.0, 0) for m in modes}
    for r in range(a.rounds):
        for m, run in modes.items():
            lat, n, secs, batches = run(qs[r * block:(r + 1) * block])
            lat0, n0, secs0, b0 = acc[m]
            acc[m] = (lat0 + lat, n0 + n, secs0 + secs, b0 + batches)
    return [(m, c, *summary(lat, n, secs), n / max(b, 1)) for m, (lat, n, secs, b) in acc.items()]


# -- over HTTP ----------------------------------------------------------------------------------

WORLD = "bench-predict"


async def _call(conn: Any, method: str, path: str, body: Any = None, **headers: str) -> Any:
    status, _, doc = await conn.request(method, path, body, {"Content-Type": "application/json", **headers})
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {doc}")
    return doc


def _connect(url: str, key: str | None) -> Any:
    """A connection to the node at `url` that sends `key` with every request, as a real client does."""
    from bench.rawhttp import Connection

    host, port = url.removeprefix("http://").split(":")
    return Connection(host, int(port), {"Authorization": f"Bearer {key}"} if key else {})


async def http_setup(url: str, key: str | None, digest: str, model: WorldModel, entities: int) -> list[str]:
    """Publish the model (create-only), wait until the node serves it, and make a world."""
    from world_model.checkpoints import make_manifest

    conn = _connect(url, key)
    manifest = make_manifest(digest, model.cfg.to_dict(), dict(model.metrics or {}), None)
    await _call(conn, "PUT", "/v1/models/manifest", json.dumps(manifest, default=float).encode(),
                **{"If-None-Match": "*"})
    deadline = time.monotonic() + 120
    while (await _call(conn, "GET", "/v1/models/current")).get("hash") != digest:
        if time.monotonic() > deadline:
            raise RuntimeError("the node did not load the published model within 120 s")
        await asyncio.sleep(0.1)
    await _call(conn, "PUT", f"/v1/worlds/{WORLD}", {})
    await _call(conn, "PUT", f"/v1/worlds/{WORLD}/physics", {"gravity": PHYS.gravity,
                "restitution": PHYS.restitution, "drag": PHYS.drag, "time_step": PHYS.time_step})
    rng = np.random.default_rng(0)
    ids = [f"ball{i}" for i in range(entities)]
    obs = [{"event_id": f"init-{e}", "entity": e, "source": "bench",
            "fields": {"x": float(rng.uniform(1, 9)), "y": float(rng.uniform(1, 9)), "vx": float(rng.uniform(-3, 3)),
                       "vy": float(rng.uniform(-3, 3)), "radius": 0.4, "mass": 1.0}} for e in ids]
    token = (await _call(conn, "POST", f"/v1/worlds/{WORLD}/observations", obs))["token"]
    await _call(conn, "GET", f"/v1/worlds/{WORLD}/entities/{ids[0]}?token={token}")  # visible before the run
    await conn.close()
    return ids


async def http_clients(url: str, key: str | None, body: dict[str, Any], n: int,
                       conc: int) -> tuple[float, float, float, float]:
    conns = [_connect(url, key) for _ in range(conc)]
    payload = json.dumps(body).encode()
    await _call(conns[0], "POST", f"/v1/worlds/{WORLD}/predict", payload)  # warm-up
    before = await _call(conns[0], "GET", "/v1/models/current")
    lat: list[float] = []
    left = [n]
    failed: dict[str, int] = {}

    async def client(conn: Any) -> None:
        while left[0] > 0:
            left[0] -= 1
            t = time.perf_counter()
            status, _, doc = await conn.request("POST", f"/v1/worlds/{WORLD}/predict", payload,
                                                {"Content-Type": "application/json"})
            if status == 200:
                lat.append(time.perf_counter() - t)
            else:  # counted and reported, not fatal: the table still says what the others saw
                why = f"{status} {doc.get('detail', '') if isinstance(doc, dict) else doc}"
                failed[why] = failed.get(why, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    secs = time.perf_counter() - t0
    after = await _call(conns[0], "GET", "/v1/models/current")
    for c in conns:
        await c.close()
    batches = after["batches"] - before["batches"]
    for why, k in failed.items():
        print(f"  http, concurrency {conc}: {k} of {n} predicts failed: {why}", file=sys.stderr)
    return (*summary(lat, len(lat), secs), (after["queries"] - before["queries"]) / max(batches, 1))


async def http_after_plan(url: str, key: str | None, body: dict[str, Any], n: int,
                          goal_entity: str) -> tuple[float, float, float]:
    """Lone-query predict p50 before a plan, right after one, and a second later."""
    conn = _connect(url, key)
    payload = json.dumps(body).encode()

    async def p50() -> float:
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            await _call(conn, "POST", f"/v1/worlds/{WORLD}/predict", payload)
            lat.append(time.perf_counter() - t)
        return float(np.percentile(np.asarray(lat) * 1000, 50))

    before = await p50()
    plan = {"entity": goal_entity, "goal": {"x": 5.0, "y": 5.0, "radius": 1.0}, "horizon": body["horizon"]}
    await _call(conn, "POST", f"/v1/worlds/{WORLD}/plan", plan)
    after = await p50()
    await asyncio.sleep(1.0)
    later = await p50()
    await conn.close()
    return before, after, later


def over_http(model: WorldModel, digest: str, ckdir: str, a: argparse.Namespace) -> tuple[list[Row], tuple[float, float, float], int | None]:
    from deploy.launcher import Deployment, Topology
    from world_model.checkpoints import CheckpointStore

    rows: list[Row] = []
    # The same node without batching (max batch 1) is the HTTP baseline: over HTTP a query also
    # reads etcd and Redis and encodes JSON, so a plain forward is no fair yardstick there.
    for name, max_batch in (("http micro-batched", a.max_batch), ("http one-by-one", 1)):
        env = {"WORLDSTATE_DEVICE": "cpu", "WORLDSTATE_PREDICT_MAX_BATCH": str(max_batch),
               "WORLDSTATE_PREDICT_MAX_WAIT_MS": str(a.max_wait_ms),
               "WORLDSTATE_PREDICT_MEMO": "0"}  # the same query each time: measure the model, not the memo
        if a.node_threads is not None:
            env["WORLDSTATE_TORCH_THREADS"] = str(a.node_threads)
        with Deployment(Topology(etcd_members=1, regions=1, api_env=env)) as d:
            CheckpointStore(d.run_dir / "checkpoints").put_bytes(CheckpointStore(ckdir).get_bytes(digest))
            url, key = d.api["r1"].url, d.admin_key
            ids = asyncio.run(http_setup(url, key, digest, model, a.http_entities))
            body = {"horizon": a.horizon, "entities": ids}
            for c in a.concurrency:
                rows.append((name, c, *asyncio.run(http_clients(url, key, body, a.http_queries, c))))
            if max_batch > 1:
                plan = asyncio.run(http_after_plan(url, key, body, a.after_plan_queries, ids[0]))
                threads = asyncio.run(_threads(url, key))
    return rows, plan, threads


async def _threads(url: str, key: str | None) -> int | None:
    conn = _connect(url, key)
    cur = await _call(conn, "GET", "/v1/models/current")
    await conn.close()
    return cur.get("torch_threads")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="latest")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads in this process (0: one per CPU); "
                   "1 is a node's default, WORLDSTATE_TORCH_THREADS")
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--queries", type=int, default=768, help="queries per in-process row")
    p.add_argument("--rounds", type=int, default=3, help="alternating blocks each in-process row is run in")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--max-batch", type=int, default=32, help="as WORLDSTATE_PREDICT_MAX_BATCH (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="as WORLDSTATE_PREDICT_MAX_WAIT_MS")
    p.add_argument("--http", action="store_true", help="also start a local deployment and query it over HTTP")
    p.add_argument("--http-queries", type=int, default=512, help="queries per HTTP row")
    p.add_argument("--http-entities", type=int, default=3, help="entities in the HTTP world")
    p.add_argument("--after-plan-queries", type=int, default=100)
    p.add_argument("--node-threads", type=int, default=None,
                   help="WORLDSTATE_TORCH_THREADS for the node (default: the node's own default)")
    a = p.parse_args(argv)
    threads = set_torch_threads(a.threads)
    model, digest, ckdir = load_model(a)
    print(f"model {digest[:12]} on {model.device}, torch threads {threads}, horizon {a.horizon}, "
          f"max batch {a.max_batch}, max wait {a.max_wait_ms} ms; {a.queries} queries per in-process row")
    rows: list[Row] = []
    base: dict[int, float] = {}
    for c in a.concurrency:
        got = in_process(model, a, c)
        base[c] = got[0][2]
        rows += got
    plan = None
    if a.http:
        http_rows, plan, node_threads = over_http(model, digest, ckdir, a)
        print(f"http: one node (1 etcd, 1 Redis), torch threads {node_threads}, {a.http_entities} entities, "
              f"{a.http_queries} queries per row")
        rows += http_rows
    header = (f"{'mode':20s}{'conc':>6s}{'queries/s':>11s}{'p50 ms':>9s}{'p99 ms':>9s}{'mean batch':>12s}"
              f"{'vs b=1':>8s}")
    print(header)
    print("-" * len(header))
    for c in a.concurrency:
        for name, cc, qps, p50, p99, mb in rows:
            if cc == c:
                print(f"{name:20s}{cc:6d}{qps:11.1f}{p50:9.2f}{p99:9.2f}{mb:12.1f}{qps / base[c]:7.2f}x")
    if plan is not None:
        print(f"http predict p50 at conc 1 ({a.after_plan_queries} in a row): before a plan {plan[0]:.2f} ms, "
              f"right after {plan[1]:.2f} ms ({plan[1] / plan[0]:.2f}x), 1 s later {plan[2]:.2f} ms "
              f"({plan[2] / plan[0]:.2f}x)")
    worst = min(qps / base[c] for name, c, qps, *_ in rows if name == "micro-batched")
    print(f"target: micro-batched >= 0.9x torch b=1 at every concurrency: worst {worst:.2f}x "
          f"{'(met)' if worst >= 0.9 else '(NOT met)'}")
    if a.http:
        alone = {c: qps for name, c, qps, *_ in rows if name == "http one-by-one"}
        worst = min(qps / alone[c] for name, c, qps, *_ in rows if name == "http micro-batched")
        print(f"target: http micro-batched >= 0.9x http one-by-one at every concurrency: worst {worst:.2f}x "
              f"{'(met)' if worst >= 0.9 else '(NOT met)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
