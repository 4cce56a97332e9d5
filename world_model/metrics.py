"""Measurements shared by training (quick metrics stored in the manifest) and
evaluation: latent banks, rollout errors, latent spread, linear R^2, and the
surprise calibration that turns an energy into a yes/no answer."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .config import PRESENT, Config
from .model import JEPA, surprise_score
from .probe import Probe, denormalise_state, linear_r2, normalise_state
from .simulator import Rollouts, sample_windows

SURPRISE_HORIZON = 10  # observed steps per surprise query in calibration and evaluation
HORIZONS = (1, 5, 10, 20)


def _device(jepa: JEPA) -> torch.device:
    return next(jepa.parameters()).device


def _windows(data: Rollouts, length: int, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    return sample_windows(data, length, n, torch.Generator().manual_seed(seed))


@torch.no_grad()
def latent_bank(jepa: JEPA, data: Rollouts, cfg: Config, n: int, horizon: int, seed: int,
                frame_dropout: float | None = None, chunk: int = 256
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Encode n context windows and roll them `horizon` steps with the true
    actions. Returns latents (n, H+1, N, D), normalised true states (n, H+1, N, 4)
    and a mask of real bodies (n, H+1, N)."""
    w = cfg.model.window
    frames, actions, phys = (t.to(_device(jepa)) for t in _windows(data, w + horizon, n, seed))
    p = cfg.train.frame_dropout if frame_dropout is None else frame_dropout
    gen = torch.Generator().manual_seed(seed + 1)
    hide = (torch.rand(n, generator=gen) < p).to(frames.device)
    zs = []
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        vis = torch.ones(frames[sl].shape[0], w, device=frames.device)
        if w > 1:
            vis[:, :-1] = (~hide[sl]).float()[:, None]
        enc = jepa.encode(frames[sl, :w], phys[sl], vis)
        pred = jepa.rollout(enc, phys[sl], actions[sl, w - 1:])
        zs.append(torch.cat([enc.z[:, None], pred], dim=1))
    future = frames[:, w - 1:]
    y = normalise_state(future, cfg.sim.box, cfg.model)
    mask = future[..., PRESENT] > 0
    return torch.cat(zs), y, mask


@torch.no_grad()
def jepa_predict(jepa: JEPA, probe: Probe, frames: Tensor, actions: Tensor, phys: Tensor, cfg: Config,
                 horizon: int, chunk: int = 256) -> Tensor:
    """Context = the first W frames; returns probe-decoded states (B, horizon, N, 4)
    after rolling the latents with actions[:, W-1:W-1+horizon]."""
    w, dev = cfg.model.window, _device(jepa)
    out = []
    for s in range(0, frames.shape[0], chunk):
        f, a, p = (t[s:s + chunk].to(dev) for t in (frames, actions, phys))
        enc = jepa.encode(f[:, :w], p)
        z = jepa.rollout(enc, p, a[:, w - 1:w - 1 + horizon])
        out.append(denormalise_state(probe(z), cfg.sim.box, cfg.model).to(frames.device))
    return torch.cat(out)


@torch.no_grad()
def probe_errors(probe: Probe, z: Tensor, y: Tensor, mask: Tensor, cfg: Config,
                 horizons: tuple[int, ...] = HORIZONS) -> dict[str, float]:
    """Mean position error (metres) and velocity error (m/s) at each horizon."""
    out: dict[str, float] = {}
    pred = denormalise_state(probe(z), cfg.sim.box, cfg.model)
    true = denormalise_state(y, cfg.sim.box, cfg.model)
    for h in horizons:
        if h >= z.shape[1]:
            continue
        m = mask[:, h]
        out[f"pos_err@{h}"] = float((pred[:, h, ..., 0:2] - true[:, h, ..., 0:2]).norm(dim=-1)[m].mean())
        out[f"vel_err@{h}"] = float((pred[:, h, ..., 2:4] - true[:, h, ..., 2:4]).norm(dim=-1)[m].mean())
    return out


@torch.no_grad()
def latent_spread(jepa: JEPA, data: Rollouts, cfg: Config, n: int = 512, seed: int = 11) -> dict[str, float]:
    """Per-dimension std of encoder latents over real bodies: a collapsed
    encoder has (near) zero std in most dimensions."""
    frames, _, phys = _windows(data, cfg.model.window, n, seed)
    enc = jepa.encode(frames.to(_device(jepa)), phys.to(_device(jepa)))
    std = enc.z[enc.valid].std(0)
    return {"latent_std_min": float(std.min()), "latent_std_mean": float(std.mean()),
            "latent_dims_above_0.1": int((std > 0.1).sum())}


@torch.no_grad()
def surprise_scores(jepa: JEPA, frames: Tensor, actions: Tensor, phys: Tensor, chunk: int = 256) -> Tensor:
    out, dev = [], _device(jepa)
    for s in range(0, frames.shape[0], chunk):
        e, valid = jepa.surprise(*(t[s:s + chunk].to(dev) for t in (frames, actions, phys)))
        out.append(surprise_score(e, valid).cpu())
    return torch.cat(out)


@torch.no_grad()
def calibrate_energy(jepa: JEPA, data: Rollouts, cfg: Config, n: int = 1024, seed: int = 12,
                     chunk: int = 256) -> None:
    """Set jepa.energy_var to the mean squared prediction error per horizon
    step and latent dimension on normal held-out windows."""
    w = cfg.model.window
    h = min(cfg.model.max_horizon, data.frames.shape[1] - w)
    frames, actions, phys = (t.to(_device(jepa)) for t in _windows(data, w + h, n, seed))
    total = torch.zeros(h, cfg.model.latent_dim, device=frames.device)
    count = 0.0
    for s in range(0, n, chunk):
        f, a, p = frames[s:s + chunk], actions[s:s + chunk], phys[s:s + chunk]
        enc = jepa.encode(f[:, :w], p)
        pred = jepa.rollout(enc, p, a[:, w - 1:])
        obs, _ = jepa.encode_windows(f[:, 1:], p, target=True)
        m = enc.valid[:, None, :, None].float()
        total += (((pred - obs) ** 2) * m).sum(dim=(0, 2))
        count += float(enc.valid.sum())
    var = (total / max(count, 1.0)).clamp(min=1e-5)
    jepa.energy_var[:h] = var
    jepa.energy_var[h:] = var[-1]


@torch.no_grad()
def calibrate_surprise(jepa: JEPA, data: Rollouts, cfg: Config, n: int = 1024, seed: int = 13) -> dict[str, float]:
    """Energy statistics on normal held-out rollouts. A threshold is the
    99.5th percentile of normal scores, so about 1 normal query in 200 is
    flagged; there is one per number of observed steps K (thresholds[K-1]),
    and `threshold` is the one for SURPRISE_HORIZON steps."""
    calibrate_energy(jepa, data, cfg)
    w, dev = cfg.model.window, _device(jepa)
    k_max = min(cfg.model.max_horizon, data.frames.shape[1] - w)
    frames, actions, phys = (t.to(dev) for t in _windows(data, w + k_max, n, seed))
    energies, valid = [], []
    for s in range(0, n, 256):
        e, v = jepa.surprise(frames[s:s + 256], actions[s:s + 256, w - 1:], phys[s:s + 256])
        energies.append(e)
        valid.append(v)
    e, v = torch.cat(energies), torch.cat(valid)
    thresholds = [float(torch.quantile(surprise_score(e[:, :k], v), 0.995)) for k in range(1, k_max + 1)]
    s = surprise_score(e[:, :SURPRISE_HORIZON], v)
    return {"horizon": SURPRISE_HORIZON, "threshold": thresholds[min(SURPRISE_HORIZON, k_max) - 1],
            "thresholds": thresholds, "normal_median": float(s.median()), "normal_mean": float(s.mean())}


@torch.no_grad()
def linear_probe_r2(jepa: JEPA, train: Rollouts, val: Rollouts, cfg: Config, n: int = 2048) -> dict[str, float]:
    zt, yt, mt = latent_bank(jepa, train, cfg, n, 0, seed=21, frame_dropout=0.0)
    zv, yv, mv = latent_bank(jepa, val, cfg, n // 2, 0, seed=22, frame_dropout=0.0)
    r2 = linear_r2(zt[:, 0][mt[:, 0]], yt[:, 0][mt[:, 0]], zv[:, 0][mv[:, 0]], yv[:, 0][mv[:, 0]])
    return {"linear_r2_pos": float(r2[0:2].mean()), "linear_r2_vel": float(r2[2:4].mean())}


@torch.no_grad()
def quick_metrics(jepa: JEPA, probe: Probe, train: Rollouts, val: Rollouts, cfg: Config) -> dict[str, Any]:
    z, y, m = latent_bank(jepa, val, cfg, 512, max(HORIZONS), seed=5, frame_dropout=0.0)
    out: dict[str, Any] = {}
    out.update(probe_errors(probe, z, y, m, cfg))
    out.update(latent_spread(jepa, val, cfg))
    out.update(linear_probe_r2(jepa, train, val, cfg))
    out["calibration"] = calibrate_surprise(jepa, val, cfg)
    return out
