"""Configuration as plain dataclasses (nanoGPT style: no config framework).

`Physics` is the physics document stored in the CP tier. Everything else
describes how the world is sampled, how big the model is and how it trains.
`Config.to_dict` / `Config.from_dict` round-trip through JSON so a config can
live inside a checkpoint and a manifest.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# Layout of one entity observation in every tensor of the package:
# x, y, vx, vy, radius, mass, present (1.0 for a real body, 0.0 for padding).
OBS_DIM = 7
X, Y, VX, VY, RADIUS, MASS, PRESENT = range(OBS_DIM)


def _constant(default: float, lo: float, hi: float, description: str, *, lo_open: bool = False) -> Any:
    """A physics field with the range a stored document may take: wider than what the
    model was trained on (PhysicsRanges), so a world can hold physics no model serves."""
    return field(default=default, metadata={"range": (lo, hi), "lo_open": lo_open, "description": description})


@dataclass(frozen=True)
class Physics:
    """The physics document stored in the CP tier, defined here once: the service
    validates documents against these fields and ranges, and the API's schema is
    derived from them."""

    gravity: float = _constant(9.81, -50.0, 50.0, "downward acceleration, m/s^2 (negative: upward)")
    restitution: float = _constant(0.9, 0.0, 1.0, "bounce: 0 fully inelastic, 1 elastic")
    drag: float = _constant(0.1, 0.0, 10.0, "linear drag coefficient, 1/s")
    time_step: float = _constant(0.05, 0.0, 0.1, "simulation step, s", lo_open=True)

    def as_list(self) -> list[float]:
        return [getattr(self, name) for name in PHYSICS_FIELDS]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Physics":
        return cls(**{k: float(d[k]) for k in PHYSICS_FIELDS if k in d})


PHYSICS_FIELDS = tuple(f.name for f in dataclasses.fields(Physics))


@dataclass
class PhysicsRanges:
    """Training samples constants uniformly from these ranges; serving refuses
    constants outside them because the model never saw such worlds."""

    gravity: tuple[float, float] = (0.0, 15.0)
    restitution: tuple[float, float] = (0.5, 1.0)
    drag: tuple[float, float] = (0.0, 0.5)
    time_step: tuple[float, float] = (0.04, 0.06)

    def contains(self, p: Physics, slack: float = 1e-6) -> list[str]:
        """Names of the constants of `p` outside the ranges (empty if none)."""
        bad = []
        for name in PHYSICS_FIELDS:
            lo, hi = getattr(self, name)
            v = getattr(p, name)
            if not (lo - slack <= v <= hi + slack):
                bad.append(name)
        return bad


@dataclass
class SimConfig:
    box: float = 10.0  # square box side, metres
    max_bodies: int = 5
    min_bodies: int = 1
    radius: tuple[float, float] = (0.3, 0.7)
    mass: tuple[float, float] = (0.5, 2.0)
    speed: float = 4.0  # initial velocity components drawn from [-speed, speed]
    action_prob: float = 0.25  # chance a body gets an impulse on a given step
    action_max: float = 2.0  # impulse component bound, N*s
    # Chance a body starts at rest on the floor: resting contact is where a learned
    # contact response is most easily wrong, and random starts rarely settle.
    rest_prob: float = 0.15
    ranges: PhysicsRanges = field(default_factory=PhysicsRanges)


@dataclass
class DataConfig:
    train_rollouts: int = 2048
    val_rollouts: int = 256
    rollout_len: int = 64  # steps; rollouts have rollout_len + 1 frames
    seed: int = 0


@dataclass
class ModelConfig:
    window: int = 2  # frames of context the encoder sees
    latent_dim: int = 20  # per-entity latent: 4 state coordinates + learned features
    d_model: int = 64  # hidden width of the encoder and the contact networks
    enc_layers: int = 2
    pred_layers: int = 2
    max_horizon: int = 50  # longest rollout the inference API accepts
    # Normalisation scales: divide raw quantities to get O(1) inputs.
    vel_scale: float = 5.0
    gravity_scale: float = 10.0
    dt_scale: float = 0.05


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    rollout_k: int = 6  # predictor unroll length during training
    ema_start: float = 0.99
    ema_end: float = 0.999
    state_weight: float = 1.0  # the state part of the latent
    pred_weight: float = 1.0  # the learned features
    var_weight: float = 1.0
    cov_weight: float = 0.04
    loss_pos_scale: float = 0.05  # m: state errors are measured in these units (Huber, delta 1)
    loss_vel_scale: float = 0.5  # m/s
    frame_dropout: float = 0.2  # chance the older context frames are hidden
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    checkpoint_dir: str = "checkpoints"
    resume_every: int = 250  # steps between resumable snapshots
    log_every: int = 50


@dataclass
class Config:
    sim: SimConfig = field(default_factory=SimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def portable(self) -> dict[str, Any]:
        """to_dict without where and on what this run happened (checkpoint folder, device,
        threads): what a blob records, so the same training gives the same bytes anywhere."""
        d = self.to_dict()
        local = TrainConfig()
        d["train"].update(checkpoint_dir=local.checkpoint_dir, device=local.device, threads=local.threads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        def build(tp: type, values: dict[str, Any]) -> Any:
            kwargs = {}
            for f in dataclasses.fields(tp):
                if f.name not in values:
                    continue
                v = values[f.name]
                factory = f.default_factory
                if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
                    v = build(factory, v)  # type: ignore[arg-type]
                elif isinstance(v, list):
                    v = tuple(v)
                kwargs[f.name] = v
            return tp(**kwargs)

        return build(cls, d)


def default_config() -> Config:
    """Defaults that train in a few minutes on 2 CPU cores."""
    return Config()


def tiny_config() -> Config:
    """A config for tests: seconds on one core, still learns something."""
    cfg = Config()
    cfg.data = DataConfig(train_rollouts=256, val_rollouts=64, rollout_len=32, seed=0)
    cfg.model = ModelConfig(latent_dim=12, d_model=32, enc_layers=1, pred_layers=2, max_horizon=30)
    cfg.train = TrainConfig(steps=300, batch_size=32, lr=2e-3, warmup=20, rollout_k=3,
                            resume_every=50, log_every=25)
    return cfg


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from `start` at step 0 to `end` at `total`."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))
