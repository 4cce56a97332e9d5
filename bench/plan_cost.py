"""The most expensive plan (and predict) a node accepts: time and memory, against plain torch rollouts.

    python bench/plan_cost.py [--checkpoint HASH --checkpoint-dir DIR] [--threads 1]

For several body counts n and the longest horizon, the largest budget world_model.state allows
(MAX_PLAN_COST) is planned once; each case runs in a fresh process so its peak memory is its own.
"plain torch" is the same number of candidate rollouts through the predictor with no CEM around
them (the raw backend). Target: every allowed plan in about a second or less on 2 cores.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _case(args: tuple[str, str, int, int, int, int]) -> tuple[float, float, float, int]:
    digest, ckdir, n, horizon, budget, threads = args
    import numpy as np
    import torch

    from world_model.config import Physics
    from world_model.inference import WorldModel

    torch.set_num_threads(threads)
    model = WorldModel.load(digest, ckdir, "cpu")
    grid = [(x, y) for y in np.linspace(1, 9, 8) for x in np.linspace(1, 9, 8)][:n]
    state = np.array([[x, y, 0.5, 0.0, 0.3, 1.0] for x, y in grid])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    model.plan(state, Physics(), 0, [5.0, 5.0, 1.0], horizon, budget)
    plan_s = time.perf_counter() - t0
    frames, visible = model._frames(state, "state")  # noqa: SLF001 - the same tensors plan builds
    with torch.inference_mode():
        enc = model.jepa.encode(frames[None].repeat(budget, 1, 1, 1), torch.tensor([Physics().as_list()] * budget),
                                visible[None].repeat(budget, 1))
        t0 = time.perf_counter()
        model.jepa.rollout(enc, torch.tensor([Physics().as_list()] * budget), torch.zeros(budget, horizon, n, 2))
        raw_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return plan_s, raw_s, (peak - base) / 1024, peak // 1024


def _predict_case(args: tuple[str, str, int, int]) -> tuple[int, float, int]:
    """The largest predict a node accepts: MAX_ENTITIES bodies at the model's longest horizon."""
    digest, ckdir, n, threads = args
    import numpy as np
    import torch

    from world_model.config import Physics
    from world_model.inference import WorldModel

    torch.set_num_threads(threads)
    model = WorldModel.load(digest, ckdir, "cpu")
    grid = [(x, y) for y in np.linspace(1, 9, 8) for x in np.linspace(1, 9, 8)][:n]
    state = np.array([[x, y, 0.5, 0.0, 0.3, 1.0] for x, y in grid])
    model.predict(state, Physics(), 1)  # warm
    t0 = time.perf_counter()
    model.predict(state, Physics(), model.max_horizon, np.full((model.max_horizon, n, 2), 0.1))
    return model.max_horizon, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main(argv: list[str] | None = None) -> int:
    from world_model import shipped
    from world_model.state import MAX_PLAN_COST, MIN_BUDGET, largest_budget, plan_cost

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="model hash (default: the shipped model)")
    p.add_argument("--checkpoint-dir", default=str(shipped.DEFAULT_DIR))
    p.add_argument("--threads", type=int, default=1, help="torch threads, as WORLDSTATE_TORCH_THREADS")
    p.add_argument("--horizon", type=int, default=50)
    p.add_argument("--bodies", type=int, nargs="+", default=[1, 2, 8, 16, 32, 64])
    a = p.parse_args(argv)
    digest = a.checkpoint or shipped.default_manifest()["hash"]
    print(f"model {digest[:12]}, torch threads {a.threads}, horizon {a.horizon}, "
          f"MAX_PLAN_COST {MAX_PLAN_COST:,} units")
    header = f"{'bodies':>6s}{'budget':>8s}{'units':>12s}{'plan s':>9s}{'plain torch s':>15s}{'peak MB':>9s}"
    print(header)
    print("-" * len(header))
    ctx = mp.get_context("spawn")
    worst = 0.0
    for n in a.bodies:
        budget = largest_budget(a.horizon, n)
        if budget < MIN_BUDGET:
            print(f"{n:6d}  no budget >= {MIN_BUDGET} fits at horizon {a.horizon}")
            continue
        with ctx.Pool(1) as pool:
            plan_s, raw_s, _, peak = pool.apply(_case, ((digest, a.checkpoint_dir, n, a.horizon, budget, a.threads),))
        worst = max(worst, plan_s)
        print(f"{n:6d}{budget:8d}{plan_cost(budget, a.horizon, n):12,d}{plan_s:9.2f}{raw_s:15.2f}{peak:9d}")
    print(f"worst allowed plan: {worst:.2f} s (target: about 1 s or less)")
    from world_model.state import MAX_ENTITIES
    with ctx.Pool(1) as pool:
        horizon, predict_s, peak = pool.apply(_predict_case, ((digest, a.checkpoint_dir, MAX_ENTITIES, a.threads),))
    print(f"worst allowed predict ({MAX_ENTITIES} bodies, horizon {horizon}, with actions): {predict_s:.2f} s, "
          f"peak {peak} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
