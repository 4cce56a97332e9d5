"""Training entry point: `train(cfg)` and the CLI `main(argv)`.

It trains the JEPA (encoder, predictor, EMA target) on simulator rollouts,
then calibrates the surprise energy on validation rollouts. The result is
one content-addressed blob plus a manifest for the caller to publish. The
blob holds nothing that varies between runs (no timings), so the same
config, seed and machine give the same bytes and the same hash.

Determinism: parameters are initialised from `seed` and every step draws its
batch from a generator seeded by (seed, step), so a run resumed from a
snapshot takes exactly the steps an uninterrupted run would have taken.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from .checkpoints import CheckpointStore, make_manifest, to_bytes
from .config import Config, Physics, TrainConfig, cosine, default_config, tiny_config
from .device import resolve_device
from .model import JEPA
from .simulator import Rollouts, datasets, sample_windows
from . import metrics as wm_metrics

RESUME_POINTER = "latest-resume"
MODEL_POINTER = "latest-model"  # convenience for the CLIs; the CP-tier manifest is the real pointer


@dataclass
class TrainResult:
    hash: str | None  # final model blob; None when the run stopped early
    manifest: dict[str, Any] | None
    metrics: dict[str, Any] = field(default_factory=dict)
    resume_hash: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4 + stream)


def lr_at(step: int, tc: TrainConfig) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    return cosine(step - tc.warmup, tc.steps - tc.warmup, tc.lr, tc.lr * 0.05)


def build(cfg: Config, device: torch.device) -> tuple[JEPA, torch.optim.Optimizer]:
    torch.manual_seed(cfg.train.seed)
    jepa = JEPA(cfg.model, cfg.sim.box).to(device)
    params = [p for p in jepa.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    return jepa, opt


def _snapshot(store: CheckpointStore, cfg: Config, step: int, jepa: JEPA, opt: torch.optim.Optimizer,
              history: list[dict[str, float]], previous: str | None) -> str:
    digest = store.save({"kind": "resume", "config": cfg.portable(), "step": step,
                         "jepa": jepa.state_dict(), "opt": opt.state_dict(), "history": history})
    (store.dir / RESUME_POINTER).write_text(digest)
    if previous and previous != digest:
        store.delete(previous)  # only the newest snapshot is worth keeping
    return digest


def train(cfg: Config, *, resume: str | None = None, physics: Physics | None = None,
          physics_revision: int | None = None, progress: bool = True,
          stop_at: int | None = None) -> TrainResult:
    """Train a JEPA; store the model blob and return its manifest.

    physics / physics_revision: the CP-tier physics document (and its etcd
    revision) the model is meant to serve; it must lie inside the sampled
    ranges cfg.sim.ranges and is recorded in the manifest. resume: a snapshot
    hash, or "latest" for the newest snapshot in the checkpoint directory.
    stop_at: leave after this many JEPA steps with only a snapshot saved.
    """
    tc = cfg.train
    if physics is not None and cfg.sim.ranges.contains(physics):
        raise ValueError(f"physics {physics} outside the training ranges {cfg.sim.ranges}")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    store = CheckpointStore(tc.checkpoint_dir)
    t0 = time.time()
    train_data, val_data = datasets(cfg.sim, cfg.data)
    train_data, val_data = train_data.to(device), val_data.to(device)
    jepa, opt = build(cfg, device)
    start, history, snap = 0, [], None
    if resume is not None:
        snap = (store.dir / RESUME_POINTER).read_text().strip() if resume == "latest" else resume
        state = store.load(snap, map_location=device)
        if state.get("kind") != "resume":
            raise ValueError(f"{snap} is not a training snapshot")
        for part in ("sim", "data", "model"):
            if state["config"][part] != cfg.to_dict()[part]:
                raise ValueError(f"snapshot {snap[:12]} was trained with a different {part} config")
        jepa.load_state_dict(state["jepa"])
        opt.load_state_dict(state["opt"])
        start, history = int(state["step"]), list(state["history"])

    length = cfg.model.window + tc.rollout_k
    end = tc.steps if stop_at is None else min(stop_at, tc.steps)
    jepa.train()
    bar = tqdm(range(start, end), desc="jepa", disable=not progress, initial=start, total=tc.steps)
    acc: dict[str, float] = {}
    first_snapshot: dict[str, Any] | None = None
    for step in bar:
        gen = step_generator(tc.seed, step)
        frames, actions, phys = sample_windows(train_data, length, tc.batch_size, gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        out = jepa.loss(frames, actions, phys, tc, gen)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(opt.param_groups[0]["params"], tc.grad_clip)
        opt.step()
        jepa.update_target(cosine(step, tc.steps, tc.ema_start, tc.ema_end))
        for k, v in out.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        if (step + 1) % tc.log_every == 0 or step + 1 == end:
            n = (step % tc.log_every) + 1
            row = {"step": step + 1, **{k: v / n for k, v in acc.items()}}
            history.append(row)
            acc = {}
            bar.set_postfix(loss=f"{row['loss']:.4f}", state=f"{row['state']:.4f}", var=f"{row['var']:.3f}")
        if (step + 1) % tc.resume_every == 0 or step + 1 == end:
            snap = _snapshot(store, cfg, step + 1, jepa, opt, history, snap)
            first_snapshot = first_snapshot or {"step": step + 1, "hash": snap}
    bar.close()
    if end < tc.steps:
        return TrainResult(None, None, {}, resume_hash=snap, history=history)

    jepa.eval()
    jepa.requires_grad_(False)
    metrics = wm_metrics.quick_metrics(jepa, train_data, val_data, cfg)
    metrics["final_loss"] = history[-1]["loss"] if history else math.nan
    metrics["final_state_loss"] = history[-1]["state"] if history else math.nan
    blob = to_bytes({
        "kind": "worldstate-jepa", "config": cfg.portable(),
        "jepa": {k: v.cpu() for k, v in jepa.state_dict().items()},
        "calibration": metrics.pop("calibration"), "metrics": metrics,
        "physics_revision": physics_revision,
        "physics": None if physics is None else dataclasses.asdict(physics),
    })
    metrics = {**metrics, "train_seconds": round(time.time() - t0, 1)}  # the manifest's, not the blob's
    digest = store.put_bytes(blob)
    (store.dir / MODEL_POINTER).write_text(digest)
    manifest = make_manifest(digest, cfg.portable(), metrics, physics_revision, size_bytes=len(blob),
                             physics=None if physics is None else dataclasses.asdict(physics))
    # What it takes to reproduce the blob byte for byte: float results depend on the thread
    # count and the CPU's vector instructions. The first snapshot lets a check replay a few
    # hundred steps instead of the whole run.
    manifest["training"] = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "seconds": metrics["train_seconds"],
                            "first_snapshot": first_snapshot if start == 0 else None}
    return TrainResult(digest, manifest, metrics, resume_hash=snap, history=history)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="worldstate train", description="Train the JEPA world model.")
    p.add_argument("--config", choices=["default", "tiny"], default="default")
    p.add_argument("--steps", type=int, help="JEPA optimisation steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--checkpoint-dir")
    p.add_argument("--resume", help="snapshot hash, or 'latest'")
    p.add_argument("--physics", help='the physics document as JSON, e.g. \'{"gravity": 9.81, '
                   '"restitution": 0.9, "drag": 0.1, "time_step": 0.05}\'')
    p.add_argument("--physics-revision", type=int, help="CP-tier revision of the physics document")
    p.add_argument("--manifest-out", help="also write the manifest JSON here")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = tiny_config() if args.config == "tiny" else default_config()
    for attr, name in (("steps", "steps"), ("seed", "seed"), ("device", "device"),
                       ("threads", "threads"), ("checkpoint_dir", "checkpoint_dir")):
        v = getattr(args, attr)
        if v is not None:
            setattr(cfg.train, name, v)
    if args.seed is not None:
        cfg.data.seed = args.seed
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    physics = Physics.from_dict(json.loads(args.physics)) if args.physics else None
    res = train(cfg, resume=args.resume, physics=physics, physics_revision=args.physics_revision,
                progress=not args.no_progress)
    text = json.dumps(res.manifest, indent=2, default=float)
    if args.manifest_out:
        with open(args.manifest_out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
