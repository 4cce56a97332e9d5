"""Predict throughput and latency: micro-batched vs one by one, against plain
torch forward calls on the same model in the same run.

    python bench/predict.py                      # newest model in checkpoints/, else a tiny one
    python bench/predict.py --checkpoint HASH --checkpoint-dir DIR --concurrency 1 8 32 128

Rows:
  torch forward b=1    the raw backend: encode + rollout + probe, one world per call
  torch forward b=C    the raw backend given C worlds in one call (batching's ceiling)
  one-by-one           C concurrent asyncio clients, every query its own forward pass
  micro-batched        C concurrent clients through MicroBatcher
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world_model.batching import MicroBatcher  # noqa: E402
from world_model.config import Physics, tiny_config  # noqa: E402
from world_model.inference import WorldModel  # noqa: E402
from world_model.train import MODEL_POINTER, train  # noqa: E402

PHYS = Physics()


def load_model(args: argparse.Namespace) -> WorldModel:
    ckdir = Path(args.checkpoint_dir)
    digest = args.checkpoint
    if digest == "latest" and (ckdir / MODEL_POINTER).exists():
        digest = (ckdir / MODEL_POINTER).read_text().strip()
    if digest != "latest":
        return WorldModel.load(digest, str(ckdir), args.device)
    print("no trained model found; training a tiny one for the benchmark", file=sys.stderr)
    cfg = tiny_config()
    cfg.train.checkpoint_dir = tempfile.mkdtemp(prefix="wm-bench-")
    res = train(cfg, progress=False)
    return WorldModel.load(res.hash, cfg.train.checkpoint_dir, args.device)


def queries(n: int, horizon: int, seed: int) -> list[tuple[np.ndarray, Physics, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 6))
        s = np.column_stack([rng.uniform(1, 9, (k, 2)), rng.uniform(-3, 3, (k, 2)),
                             rng.uniform(0.3, 0.7, k), rng.uniform(0.5, 2, k)])
        out.append((s, PHYS, horizon))
    return out


def stats(lat: list[float], n: int, secs: float) -> tuple[float, float, float]:
    a = np.asarray(lat) * 1000
    return n / secs, float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bench_raw(model: WorldModel, qs: list, batch: int) -> tuple[float, float, float]:
    """Plain torch calls on prepared tensors: no validation, no asyncio."""
    prepared = [model.prepare_predict(*q) for q in qs]
    groups = [prepared[i:i + batch] for i in range(0, len(prepared) - batch + 1, batch)]
    model.predict_prepared(groups[0])  # warm-up
    lat = []
    t0 = time.perf_counter()
    for g in groups:
        t = time.perf_counter()
        model.predict_prepared(g)
        lat.append(time.perf_counter() - t)
    return stats(lat, len(groups) * batch, time.perf_counter() - t0)


async def bench_clients(model: WorldModel, qs: list, conc: int, max_batch: int, wait_ms: float
                        ) -> tuple[float, float, float, float]:
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
        mean_batch = mb.stats.mean_batch
    return (*stats(lat, len(lat), secs), mean_batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="latest")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--queries", type=int, default=512, help="queries per row")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a)
    qs = queries(a.queries, a.horizon, seed=0)
    print(f"model {model.hash[:12] if model.hash else '?'} on {model.device}, threads {a.threads}, "
          f"horizon {a.horizon}, {a.queries} queries per row, max batch {a.max_batch}, wait {a.max_wait_ms} ms")
    header = f"{'mode':22s}{'conc':>6s}{'queries/s':>12s}{'p50 ms':>10s}{'p99 ms':>10s}{'mean batch':>12s}"
    print(header)
    print("-" * len(header))
    qps, p50, p99 = bench_raw(model, qs, 1)
    print(f"{'torch forward b=1':22s}{1:6d}{qps:12.1f}{p50:10.2f}{p99:10.2f}{1:12.1f}")
    for c in a.concurrency:
        if c > 1:
            qps, p50, p99 = bench_raw(model, qs, c)
            print(f"{'torch forward b=C':22s}{c:6d}{qps:12.1f}{p50:10.2f}{p99:10.2f}{c:12.1f}")
        for name, mb, wait in (("one-by-one", 1, 0.0), ("micro-batched", a.max_batch, a.max_wait_ms)):
            qps, p50, p99, mean_b = asyncio.run(bench_clients(model, qs, c, mb, wait))
            print(f"{name:22s}{c:6d}{qps:12.1f}{p50:10.2f}{p99:10.2f}{mean_b:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
