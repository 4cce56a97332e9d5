"""Measurements shared by training (quick metrics stored in the manifest) and
evaluation: rollout errors, latent spread, and the surprise calibration that
turns an energy into a yes/no answer."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .config import PRESENT, Config
from .events import near_wall_normals
from .model import JEPA, STATE_DIM, surprise_score
from .simulator import Rollouts, sample_windows

SURPRISE_HORIZON = 10  # observed steps per surprise query in calibration and evaluation
HORIZONS = (1, 5, 10, 20)


def _device(jepa: JEPA) -> torch.device:
    return next(jepa.parameters()).device


def _windows(data: Rollouts, length: int, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    return sample_windows(data, length, n, torch.Generator().manual_seed(seed))


@torch.no_grad()
def jepa_predict(jepa: JEPA, frames: Tensor, actions: Tensor, phys: Tensor, cfg: Config,
                 horizon: int, chunk: int = 256) -> Tensor:
    """Context = the first W frames; returns predicted states (B, horizon, N, 4)
    after rolling the latents with actions[:, W-1:W-1+horizon]."""
    w, dev = cfg.model.window, _device(jepa)
    out = []
    for s in range(0, frames.shape[0], chunk):
        f, a, p = (t[s:s + chunk].to(dev) for t in (frames, actions, phys))
        enc = jepa.encode(f[:, :w], p)
        z = jepa.rollout(enc, p, a[:, w - 1:w - 1 + horizon])
        out.append(jepa.read_state(z).to(frames.device))
    return torch.cat(out)


@torch.no_grad()
def rollout_errors(jepa: JEPA, data: Rollouts, cfg: Config, n: int = 512, seed: int = 5) -> dict[str, float]:
    """Mean position error (metres) and velocity error (m/s) at each horizon."""
    w, h = cfg.model.window, max(HORIZONS)
    frames, actions, phys = _windows(data, w + h, n, seed)
    pred = jepa_predict(jepa, frames, actions, phys, cfg, h)
    true = frames[:, w:]
    mask = frames[:, w - 1, :, PRESENT] > 0
    out: dict[str, float] = {}
    for k in HORIZONS:
        out[f"pos_err@{k}"] = float((pred[:, k - 1, :, 0:2] - true[:, k - 1, :, 0:2]).norm(dim=-1)[mask].mean())
        out[f"vel_err@{k}"] = float((pred[:, k - 1, :, 2:4] - true[:, k - 1, :, 2:4]).norm(dim=-1)[mask].mean())
    return out


@torch.no_grad()
def latent_spread(jepa: JEPA, data: Rollouts, cfg: Config, n: int = 512, seed: int = 11) -> dict[str, float]:
    """Per-dimension std of the learned latent features over real bodies: a
    collapsed encoder has (near) zero std in most dimensions."""
    frames, _, phys = _windows(data, cfg.model.window, n, seed)
    enc = jepa.encode(frames.to(_device(jepa)), phys.to(_device(jepa)))
    std = enc.z[..., STATE_DIM:][enc.valid].std(0)
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
    """Energy statistics on plausible held-out windows: n from validation rollouts and n/2 with a
    body hitting a wall (events.near_wall_normals). A threshold is the 99.5th percentile of their
    scores, so about 1 plausible query in 200 is flagged; there is one per number of observed
    steps K (thresholds[K-1]), and `threshold` is the one for SURPRISE_HORIZON steps."""
    calibrate_energy(jepa, data, cfg)
    w, dev = cfg.model.window, _device(jepa)
    k_max = min(cfg.model.max_horizon, data.frames.shape[1] - w)
    frames, actions, phys = _windows(data, w + k_max, n, seed)
    near = near_wall_normals(cfg, n // 2, k_max, seed + 1)
    frames, actions, phys = (torch.cat([a, b]).to(dev) for a, b in
                             ((frames, near[0]), (actions[:, w - 1:], near[1]), (phys, near[2])))
    energies, valid = [], []
    for s in range(0, frames.shape[0], 256):
        e, v = jepa.surprise(frames[s:s + 256], actions[s:s + 256], phys[s:s + 256])
        energies.append(e)
        valid.append(v)
    e, v = torch.cat(energies), torch.cat(valid)
    thresholds = [float(torch.quantile(surprise_score(e[:, :k], v), 0.995)) for k in range(1, k_max + 1)]
    s = surprise_score(e[:, :SURPRISE_HORIZON], v)
    return {"horizon": SURPRISE_HORIZON, "threshold": thresholds[min(SURPRISE_HORIZON, k_max) - 1],
            "thresholds": thresholds, "normal_median": float(s.median()), "normal_mean": float(s.mean())}


@torch.no_grad()
def position_error_quantiles(jepa: JEPA, data: Rollouts, cfg: Config, q: float = 0.9, n: int = 512,
                             seed: int = 6) -> list[float]:
    """The q-quantile of a body's position error (metres) after h steps, h = 1..max_horizon, on
    held-out windows: how far a prediction may be off, which a plan's verdict has to allow for."""
    w = cfg.model.window
    h = min(cfg.model.max_horizon, data.frames.shape[1] - w)
    frames, actions, phys = _windows(data, w + h, n, seed)
    pred = jepa_predict(jepa, frames, actions, phys, cfg, h)
    err = (pred[..., 0:2] - frames[:, w:, :, 0:2]).norm(dim=-1)  # (n, h, N)
    mask = frames[:, w - 1, :, PRESENT] > 0
    out = [float(torch.quantile(err[:, k][mask], q)) for k in range(h)]
    return out + [out[-1]] * (cfg.model.max_horizon - h)


@torch.no_grad()
def quick_metrics(jepa: JEPA, train: Rollouts, val: Rollouts, cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out.update(rollout_errors(jepa, val, cfg))
    out.update(latent_spread(jepa, val, cfg))
    out["calibration"] = {**calibrate_surprise(jepa, val, cfg),
                          "position_error_q90": position_error_quantiles(jepa, val, cfg)}
    return out
