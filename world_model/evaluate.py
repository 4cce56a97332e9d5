"""Evaluation: `evaluate(model)` and the CLI `main(argv)` (worldstate eval).

Four questions, each against baselines on held-out data from seeds the model
never trained on:
  rollout   position error at horizons 1/5/10/20: JEPA+probe vs constant
            velocity, a supervised next-state MLP (same data and steps) and
            the simulator itself;
  surprise  AUROC of the energy: normal windows vs teleport, vanish, gravity
            flip and passing through a wall;
  planning  MPC success rate pushing a body into a goal region: CEM in latent
            space vs random shooting, CEM on the true simulator, random impulses;
  latents   linear-probe R^2 of positions and velocities, per-dimension std.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import metrics as M
from .baselines import constant_velocity, train_mlp_baseline
from .config import PRESENT
from .events import KINDS, auroc, make_cases
from .inference import WorldModel
from .planner import LatentDynamics, SimDynamics, run_episodes
from .simulator import datasets, generate, random_worlds, rollout, sample_physics, sample_windows
from .train import MODEL_POINTER

TARGETS = {"rollout_ratio_vs_cv@10": 0.5, "auroc": 0.95, "plan_success": 0.8}


@torch.no_grad()
def eval_rollouts(model: WorldModel, seed: int, n: int, progress: bool) -> dict[str, Any]:
    cfg, w, hmax = model.cfg, model.window, max(M.HORIZONS)
    test = generate(max(n // 2, 64), 48, cfg.sim, seed=seed)
    frames, actions, phys = sample_windows(test, w + hmax, n, torch.Generator().manual_seed(seed + 1))
    dev = model.device
    frames, actions, phys = frames.to(dev), actions.to(dev), phys.to(dev)
    true = frames[:, w:, :, 0:2]
    mask = frames[:, w - 1, :, PRESENT] > 0
    train_data = datasets(cfg.sim, cfg.data)[0].to(dev)  # the JEPA's own training rollouts
    t0 = time.time()
    mlp, mlp_secs = train_mlp_baseline(cfg, train_data, progress=progress)
    preds = {
        "jepa+probe": M.jepa_predict(model.jepa, model.probe, frames, actions, phys, cfg, hmax)[..., 0:2],
        "constant_velocity": constant_velocity(frames[:, w - 1], phys, hmax),
        "supervised_mlp": mlp.rollout(frames[:, w - 1], actions[:, w - 1:], phys)[..., 0:2],
        "simulator": rollout(frames[:, w - 1], phys, actions[:, w - 1:], cfg.sim.box)[:, 1:, :, 0:2],
    }
    err = {name: {h: float((p[:, h - 1] - true[:, h - 1]).norm(dim=-1)[mask].mean()) for h in M.HORIZONS}
           for name, p in preds.items()}
    return {"position_error_m": err, "windows": n, "mlp_train_seconds": round(mlp_secs, 1),
            "seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def eval_surprise(model: WorldModel, seed: int, n: int) -> dict[str, Any]:
    t0 = time.time()
    cases = make_cases(model.cfg, n, M.SURPRISE_HORIZON, seed)
    scores = {k: M.surprise_scores(model.jepa, *v) for k, v in cases.items()}
    normal = torch.cat([scores["normal"], scores["normal_near_wall"]])
    thr = model.calibration.get("threshold", float("inf"))
    out: dict[str, Any] = {"auroc": {}, "detected_at_threshold": {}, "threshold": thr,
                           "false_positive_rate": float((normal > thr).float().mean()),
                           "median_energy": {k: float(v.median()) for k, v in scores.items()}}
    for k in KINDS:
        out["auroc"][k] = auroc(scores[k], normal)
        out["detected_at_threshold"][k] = float((scores[k] > thr).float().mean())
    out["auroc"]["all"] = auroc(torch.cat([scores[k] for k in KINDS]), normal)
    out["seconds"] = round(time.time() - t0, 1)
    out["_scores"] = {k: v.tolist() for k, v in scores.items()}
    return out


@torch.no_grad()
def eval_planning(model: WorldModel, seed: int, episodes: int, budget: int, steps: int) -> dict[str, Any]:
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    start = random_worlds(episodes, cfg.sim, gen)
    phys = sample_physics(episodes, cfg.sim.ranges, gen)
    body = torch.zeros(episodes, dtype=torch.long)
    lo, hi = 2.0, cfg.sim.box - 2.0
    goal = torch.cat([lo + (hi - lo) * torch.rand(episodes, 2, generator=gen),
                      torch.full((episodes, 1), 1.0)], dim=1)
    start, phys, body, goal = (t.to(model.device) for t in (start, phys, body, goal))
    latent, sim = LatentDynamics(model.jepa, model.probe, cfg), SimDynamics(cfg)
    runs = {"cem_latent": (latent, "cem"), "random_shooting_latent": (latent, "shooting"),
            "cem_simulator": (sim, "cem"), "random_impulses": (sim, "random"), "no_action": (sim, "none")}
    out: dict[str, Any] = {"success_rate": {}, "mean_final_distance_m": {}, "seconds": {}}
    for name, (dyn, method) in runs.items():
        t0 = time.time()
        d = run_episodes(dyn, start, phys, body, goal, cfg, steps=steps, budget=budget, method=method, seed=seed)
        out["success_rate"][name] = float((d <= goal[:, 2]).float().mean())
        out["mean_final_distance_m"][name] = float(d.mean())
        out["seconds"][name] = round(time.time() - t0, 1)
    out.update({"episodes": episodes, "budget_per_replan": budget, "steps": steps, "replan_every": 5,
                "goal_radius_m": 1.0})
    return out


def evaluate(model: WorldModel, *, seed: int = 1234, rollout_windows: int = 512, surprise_cases: int = 256,
             episodes: int = 64, budget: int = 256, plan_steps: int = 20, progress: bool = True) -> dict[str, Any]:
    t0 = time.time()
    train_data, val = datasets(model.cfg.sim, model.cfg.data)
    res: dict[str, Any] = {"model_hash": model.hash, "seed": seed}
    res["rollout"] = eval_rollouts(model, seed, rollout_windows, progress)
    res["surprise"] = eval_surprise(model, seed + 2, surprise_cases)
    res["planning"] = eval_planning(model, seed + 3, episodes, budget, plan_steps)
    res["latents"] = {**M.linear_probe_r2(model.jepa, train_data, val, model.cfg),
                      **M.latent_spread(model.jepa, val, model.cfg)}
    err = res["rollout"]["position_error_m"]
    res["checks"] = {
        "jepa_le_half_cv@10": err["jepa+probe"][10] <= 0.5 * err["constant_velocity"][10],
        "jepa_le_mlp@10": err["jepa+probe"][10] <= err["supervised_mlp"][10],
        "surprise_auroc_ge_0.95": res["surprise"]["auroc"]["all"] >= TARGETS["auroc"],
        "plan_success_ge_0.8": res["planning"]["success_rate"]["cem_latent"] >= TARGETS["plan_success"],
    }
    res["seconds"] = round(time.time() - t0, 1)
    return res


def format_table(res: dict[str, Any]) -> str:
    lines = []
    err = res["rollout"]["position_error_m"]
    lines.append("rollout position error (m)      " + "".join(f"{'h=' + str(h):>9}" for h in M.HORIZONS))
    for name, row in err.items():
        lines.append(f"  {name:30s}" + "".join(f"{row[h]:9.3f}" for h in M.HORIZONS))
    cv10, j10 = err["constant_velocity"][10], err["jepa+probe"][10]
    lines.append(f"  jepa / constant velocity @10 = {j10 / max(cv10, 1e-9):.2f} (target <= 0.50); "
                 f"jepa / mlp @10 = {j10 / max(err['supervised_mlp'][10], 1e-9):.2f} (target <= 1.00)")
    s = res["surprise"]
    lines.append(f"surprise AUROC (target >= 0.95), threshold {s['threshold']:.4f}, "
                 f"false positives {s['false_positive_rate']:.3f}")
    for k, v in s["auroc"].items():
        det = s["detected_at_threshold"].get(k)
        lines.append(f"  {k:30s}{v:9.3f}" + (f"   detected at threshold {det:.2f}" if det is not None else ""))
    p = res["planning"]
    lines.append(f"planning success ({p['episodes']} episodes, {p['steps']} steps, goal radius "
                 f"{p['goal_radius_m']} m, budget {p['budget_per_replan']}/replan; target >= 0.80)")
    for k, v in p["success_rate"].items():
        lines.append(f"  {k:30s}{v:9.3f}   mean final distance {p['mean_final_distance_m'][k]:.2f} m")
    lat = res["latents"]
    lines.append(f"latents: linear R^2 pos {lat['linear_r2_pos']:.3f}, vel {lat['linear_r2_vel']:.3f}; "
                 f"per-dim std min {lat['latent_std_min']:.3f} mean {lat['latent_std_mean']:.3f}")
    lines.append("checks: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in res["checks"].items()))
    return "\n".join(lines)


def plot(res: dict[str, Any], path: str | os.PathLike[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, row in res["rollout"]["position_error_m"].items():
        axes[0].plot(list(M.HORIZONS), [row[h] for h in M.HORIZONS], marker="o", label=name)
    axes[0].set(xlabel="horizon (steps)", ylabel="mean position error (m)", title="rollout error")
    axes[0].legend()
    sc = res["surprise"]["_scores"]
    bins = torch.logspace(-4, 2, 40).tolist()
    for k in ("normal", "normal_near_wall", *KINDS):
        axes[1].hist([max(v, 1e-4) for v in sc[k]], bins=bins, histtype="step", label=k)
    axes[1].axvline(res["surprise"]["threshold"], color="k", ls="--", lw=1)
    axes[1].set(xscale="log", xlabel="surprise energy", ylabel="count", title="surprise")
    axes[1].legend(fontsize=8)
    sr = res["planning"]["success_rate"]
    axes[2].bar(range(len(sr)), list(sr.values()))
    axes[2].set_xticks(range(len(sr)), [k.replace("_", "\n") for k in sr], fontsize=8)
    axes[2].axhline(TARGETS["plan_success"], color="k", ls="--", lw=1)
    axes[2].set(ylim=(0, 1), ylabel="success rate", title="planning")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="worldstate eval", description="Evaluate a trained world model.")
    p.add_argument("--checkpoint", default="latest", help="model hash, or 'latest' in --checkpoint-dir")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--out-dir", default="bench/results")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--budget", type=int, default=256)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    digest = a.checkpoint
    if digest == "latest":
        digest = (Path(a.checkpoint_dir) / MODEL_POINTER).read_text().strip()
    model = WorldModel.load(digest, a.checkpoint_dir, a.device)
    res = evaluate(model, seed=a.seed, episodes=a.episodes, budget=a.budget, progress=not a.no_progress)
    print(format_table(res))
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"eval-{digest[:12]}"
    plot(res, f"{stem}.png")
    res["surprise"].pop("_scores")  # plotted, too long for the JSON
    with open(f"{stem}.json", "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {stem}.json and {stem}.png ({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
