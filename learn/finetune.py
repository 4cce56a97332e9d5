"""Fine-tune the serving model on a world's trajectories, mixed with simulator replay.

`finetune(base_blob, world, cfg)` loads the blob's config and weights, trains on batches whose
`world_fraction` share is windows of the world's own trajectories and the rest windows of
fresh simulator rollouts drawn from the base model's training distribution (the replay that
keeps it from forgetting), re-calibrates surprise on held-out simulator rollouts as training
does, and returns the candidate blob. Nothing is stored or published here (gate.py decides,
publish.py stores and publishes).

What is trained: by default ("adapt") only the predictor's adaptation terms (world_model/adapt.py):
the gain on the unexplained acceleration each body's window shows (a wind) and the contact
corrections for restitution below the trained range. Both start at zero, and neither can move a
prediction in a world inside the trained ranges whose windows show no unexplained acceleration,
which is every world of the simulator suite; so the suite holds while the world is learned (on
bench/learn.py's worlds: exactly 1.000x). They learn at `adapt_lr`: they start from nothing.
"contact" trains the wall and pair networks as well, at `lr` (alone, before the terms existed,
they reached 0.71x the base's error at 10 steps on the lossy world while the suite grew 1.4x);
"all" trains everything (the suite 2x worse at 10 steps on that world).

Determinism: the replay rollouts come from `seed`, every step draws its batches from generators
seeded by (seed, step, stream), so the same inputs, config and thread count give the same bytes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from world_model.checkpoints import from_bytes, sha256_hex, to_bytes
from world_model.config import MASS, OBS_DIM, PHYSICS_FIELDS, Config, PhysicsRanges, cosine
from world_model.adapt import PREFIX as ADAPT_PREFIX
from world_model.metrics import quick_metrics
from world_model.model import JEPA
from world_model.simulator import Rollouts, generate, sample_windows
from world_model.train import step_generator

from . import parallel
from .fisher import diagonal_fisher

ADAPT_PREFIXES = (ADAPT_PREFIX,)
CONTACT_PREFIXES = ("predictor.wall.", "predictor.pair.", ADAPT_PREFIX)
TRAINABLE = {"adapt": ADAPT_PREFIXES, "contact": CONTACT_PREFIXES}  # and "all"
REPLAY_SEED_OFFSET = 7_000_001  # replay seeds never meet the training seeds (1, 2) or the evaluation's


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 300
    world_fraction: float = 0.5  # share of every batch drawn from the world; the rest is replay
    lr: float = 1e-4  # the base schedule ends at 1e-4: a larger step undoes what it learned
    # adapt.py's terms start at zero and touch no in-range prediction, so they may move faster.
    adapt_lr: float = 2e-2
    batch_size: int | None = None  # None: the base model's own
    trainable: str = "adapt"  # "adapt" (adapt.py's terms), "contact" (and wall, pair networks) or "all"
    replay_rollouts: int = 512
    replay_len: int = 32  # steps per replay rollout; windows are window + rollout_k frames
    calibration_rollouts: int = 128  # held-out simulator rollouts the surprise threshold is set on
    # False keeps the parent's calibration and metrics: ~30 s less on 2 cores, for smoke runs and
    # tests; a published model should be calibrated (surprise thresholds follow the weights).
    calibrate: bool = True
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError("steps must be >= 0")
        if not 0.0 <= self.world_fraction <= 1.0:
            raise ValueError("world_fraction must lie in [0, 1]")
        if self.trainable not in (*TRAINABLE, "all"):
            raise ValueError(f"trainable: one of {', '.join((*TRAINABLE, 'all'))}")


@dataclass
class Candidate:
    blob: bytes
    hash: str
    config: Config  # what the candidate serves (ranges widened to the world's physics)
    base_hash: str
    seconds: float  # wall time of the whole fine-tune, calibration included
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # quick_metrics on held-out simulator rollouts
    lineage: dict[str, Any] = field(default_factory=dict)  # what the blob itself records
    fisher: dict[str, torch.Tensor] = field(default_factory=dict)  # learn/fisher.py, per trained tensor


def base_config(blob: bytes) -> Config:
    return Config.from_dict(from_bytes(blob)["config"])


def load_jepa(blob: bytes) -> tuple[JEPA, Config, dict[str, Any]]:
    state = from_bytes(blob)
    cfg = Config.from_dict(state["config"])
    jepa = JEPA(cfg.model, cfg.sim.box)
    jepa.load_state_dict(state["jepa"])
    jepa.eval()
    return jepa, cfg, state


def pad_bodies(data: Rollouts, n: int) -> Rollouts:
    """Pad the body axis to `n` slots (padding: present 0, mass 1, as the simulator pads), so a
    world observed one entity per sample batches with replay worlds of max_bodies."""
    have = data.frames.shape[2]
    if have > n:
        raise ValueError(f"the world's samples hold {have} bodies; the model takes at most {n}")
    if have == n:
        return data
    r, t = data.frames.shape[:2]
    pad = torch.zeros(r, t, n - have, OBS_DIM, dtype=data.frames.dtype)
    pad[..., MASS] = 1.0
    apad = torch.zeros(r, t - 1, n - have, 2, dtype=data.actions.dtype)
    return Rollouts(torch.cat([data.frames, pad], 2), torch.cat([data.actions, apad], 2), data.physics)


def widened_ranges(ranges: PhysicsRanges, physics: torch.Tensor) -> tuple[PhysicsRanges, dict[str, list[float]]]:
    """The base ranges stretched to cover every physics row of the world: a node refuses a world
    whose constants lie outside its model's ranges, and the candidate has now seen this one."""
    out, changed = {}, {}
    for i, name in enumerate(PHYSICS_FIELDS):
        lo, hi = getattr(ranges, name)
        if physics.shape[0]:
            lo, hi = min(lo, float(physics[:, i].min())), max(hi, float(physics[:, i].max()))
        out[name] = (lo, hi)
        if (lo, hi) != tuple(getattr(ranges, name)):
            changed[name] = [lo, hi]
    return PhysicsRanges(**out), changed


def fingerprint(data: Rollouts) -> str:
    """sha256 of the world's training tensors: the lineage names exactly the data it learned from."""
    h = hashlib.sha256()
    for t in (data.frames, data.actions, data.physics):
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def _trainable(jepa: JEPA, which: str) -> list[torch.nn.Parameter]:
    jepa.requires_grad_(False)
    params = []
    for name, p in jepa.named_parameters():
        if name.startswith("target."):
            continue  # the EMA target is never trained directly
        if which == "all" or name.startswith(TRAINABLE[which]):
            p.requires_grad_(True)
            params.append(p)
    return params


def _batch(world: Rollouts, replay: Rollouts, length: int, size: int, n_world: int, seed: int, step: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    parts = []
    if n_world:
        parts.append(sample_windows(world, length, n_world, step_generator(seed, step, 1)))
    if size - n_world:
        parts.append(sample_windows(replay, length, size - n_world, step_generator(seed, step, 2)))
    frames, actions, physics = (torch.cat([p[i] for p in parts]) for i in range(3))
    return frames, actions, physics


def finetune(base_blob: bytes, world: Rollouts, cfg: FinetuneConfig = FinetuneConfig(),
             progress: bool = False) -> Candidate:
    """The candidate model after `cfg.steps` steps on the world's trajectories and replay."""
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    jepa, base, state = load_jepa(base_blob)
    tc = base.train
    length = base.model.window + tc.rollout_k
    if world.frames.shape[0] == 0 or world.frames.shape[1] < length:
        raise ValueError(f"the world has no trajectory of {length} frames (window {base.model.window} "
                         f"+ {tc.rollout_k} predicted steps) to learn from")
    world = pad_bodies(world, base.sim.max_bodies)
    replay = generate(cfg.replay_rollouts, max(cfg.replay_len, length), base.sim, seed=REPLAY_SEED_OFFSET + cfg.seed)
    size = cfg.batch_size or tc.batch_size
    n_world = round(size * cfg.world_fraction)
    torch.manual_seed(cfg.seed)
    params = _trainable(jepa, cfg.trainable)
    names = {id(p): n for n, p in jepa.named_parameters()}
    adapt = [p for p in params if names[id(p)].startswith(ADAPT_PREFIX)]
    groups = [{"params": adapt, "base_lr": cfg.adapt_lr},
              {"params": [p for p in params if not names[id(p)].startswith(ADAPT_PREFIX)], "base_lr": cfg.lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=tc.weight_decay)
    warmup = max(1, cfg.steps // 10)  # fresh Adam moments take full-size steps at first
    history: list[dict[str, float]] = []
    ranks = parallel.ranks()  # under torchrun, one of several copies (learn/parallel.py)
    seed = cfg.seed + ranks.rank * parallel.RANK_SEED_STRIDE  # rank 0's is the seed itself
    jepa.train()
    for step in range(cfg.steps):
        frames, actions, physics = _batch(world, replay, length, size, n_world, seed, step)
        for g in opt.param_groups:
            lr = g["base_lr"]
            g["lr"] = lr * (step + 1) / warmup if step < warmup else \
                cosine(step - warmup, cfg.steps - warmup, lr, lr * 0.1)
        out = jepa.loss(frames, actions, physics, tc, step_generator(seed, step, 3))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        parallel.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        opt.step()
        if cfg.trainable == "all":
            jepa.update_target(tc.ema_end)  # a frozen encoder keeps its target as it was
        if progress and ((step + 1) % 50 == 0 or step + 1 == cfg.steps):
            print(f"[finetune] step {step + 1}/{cfg.steps} loss {float(out['loss']):.4f}", flush=True)
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            history.append({"step": step + 1, **{k: float(v.detach()) for k, v in out.items()}})
    if not parallel.agree(params):
        raise RuntimeError("the data-parallel copies hold different weights after fine-tuning")
    trained = [n for n, p in jepa.named_parameters() if p.requires_grad]
    fisher = diagonal_fisher(jepa, base, world, trained) if cfg.steps else {}
    jepa.eval()
    jepa.requires_grad_(False)

    ranges, changed = widened_ranges(base.sim.ranges, world.physics)
    served = dataclasses.replace(base, sim=dataclasses.replace(base.sim, ranges=ranges))
    # Surprise thresholds and error quantiles follow the weights: set them again as training does,
    # on simulator rollouts of the base distribution from seeds no step above drew.
    if cfg.calibrate:
        calib = generate(cfg.calibration_rollouts, base.data.rollout_len, base.sim,
                         seed=REPLAY_SEED_OFFSET + cfg.seed + 1)
        metrics = quick_metrics(jepa, replay, calib, base)
    else:
        metrics = {**state.get("metrics", {}), "calibration": state.get("calibration", {})}
    base_hash = sha256_hex(base_blob)
    lineage = {"parent": base_hash, "world_data_sha256": fingerprint(world), "world_windows": int(world.frames.shape[0]),
               "finetune": dataclasses.asdict(cfg) | {"threads": None}, "ranges_widened": changed,
               **({"data_parallel": {"world_size": ranks.size}} if ranks.size > 1 else {})}
    blob = to_bytes({
        "kind": state["kind"], "config": served.portable(),
        "jepa": {k: v.cpu() for k, v in jepa.state_dict().items()},
        "calibration": metrics.pop("calibration"), "metrics": metrics,
        "physics_revision": state.get("physics_revision"), "physics": state.get("physics"),
        "lineage": lineage,
    })
    return Candidate(blob, sha256_hex(blob), served, base_hash, round(time.time() - t0, 1), history, metrics, lineage,
                     fisher)
