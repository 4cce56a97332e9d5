"""One federated round: screen the updates offered, combine the accepted ones, build the blob.

    offered updates -> consumed? stale? (the manifest's lineage) -> norm, direction (aggregate.py)
    -> each survivor alone on the held-out data (regression) -> weighted mean -> the round's blob

No I/O here beyond what the caller passes in: learn/federated.py reads the manifest, the
regions' announcements and the update blobs, and publishes.

What the lineage keeps so that an update counts in one round at most: each blob an aggregator
builds records, under lineage.federated, the updates it accepted and rejected. The serving
model's ancestry (walked through the blobs' `lineage.parent`, `max_staleness` deep) gives both
how stale an update's base is and which updates those rounds consumed; an update consumed there
is skipped. One older than that walk is stale anyway. The blob is what the manifest names, so
what counts as consumed changes only when the manifest does, by compare-and-swap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from world_model.checkpoints import from_bytes, sha256_hex, to_bytes
from world_model.config import Config
from world_model.simulator import Rollouts

from .aggregate import Delta, Entry, Rejection, Rules, combine, screen_direction, screen_norm
from .finetune import load_jepa
from .updates import Update, model_state

__all__ = ["Ancestry", "Offered", "Screened", "ancestry", "build_blob", "heldout_error", "screen", "weights_sha256"]

LoadBlob = Callable[[str], bytes]


@dataclass
class Ancestry:
    chain: list[str]  # the serving model's hash, its parent, ... (max_staleness + 1 at most)
    consumed: dict[str, str] = field(default_factory=dict)  # update hash -> the model whose round used it

    def staleness(self, base: str) -> int | None:
        return self.chain.index(base) if base in self.chain else None


def ancestry(serving: str, load_blob: LoadBlob, depth: int) -> Ancestry:
    """The serving model's last `depth` ancestors and the updates their rounds consumed. A parent
    whose blob is gone ends the walk (its updates are staler than any still in the window)."""
    out = Ancestry([serving])
    digest = serving
    for _ in range(depth + 1):
        try:
            lineage = from_bytes(load_blob(digest)).get("lineage") or {}
        except Exception:  # noqa: BLE001 - a missing or unreadable ancestor ends the walk, nothing more
            break
        for h in lineage.get("federated", {}).get("consumed", []):
            out.consumed.setdefault(h, digest)
        parent = lineage.get("parent")
        if not parent or len(out.chain) > depth:
            break
        out.chain.append(parent)
        digest = parent
    return out


@dataclass
class Offered:
    update: Update
    delta: Delta | None = None  # None when the blob could not be read (then `problem` says why)
    ranges: dict[str, list[float]] | None = None
    problem: str | None = None
    fisher: Delta | None = None  # learn/fisher.py: where the region's data informs each weight


@dataclass
class Screened:
    accepted: list[Entry]
    rejected: list[Rejection]
    skipped: list[dict[str, Any]]  # already consumed by an earlier round: not this round's to judge
    errors: dict[str, float]  # update hash -> its held-out error alone; "serving" -> the serving model's


def heldout_error(jepa: torch.nn.Module, cfg: Config, heldout: Rollouts, horizon: int, windows: int, seed: int) -> float:
    from .gate import world_errors

    errors = world_errors(jepa, cfg, heldout, windows, seed)["model"]  # type: ignore[arg-type]
    if str(horizon) not in errors:
        raise ValueError(f"held-out samples are too short for horizon {horizon}")
    return errors[str(horizon)]


def _unfit(delta: Delta, base: Delta) -> str | None:
    """Why a delta cannot be applied to the serving model's tensors, if it cannot."""
    for name, d in delta.items():
        if name not in base or base[name].shape != d.shape:
            return f"its tensor {name} {tuple(d.shape)} is not one of the serving model's"
        if not bool(torch.isfinite(d).all()):
            return f"its tensor {name} holds NaN or infinity"
    return None


def _unfit_fisher(fisher: Delta, delta: Delta) -> str | None:
    for name, f in fisher.items():
        if name not in delta or delta[name].shape != f.shape:
            return f"its Fisher tensor {name} {tuple(f.shape)} matches no tensor of its delta"
        if not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
            return f"its Fisher tensor {name} holds a negative value, NaN or infinity"
    return None


def screen(base_blob: bytes, offered: list[Offered], history: Ancestry, heldout: Rollouts, rules: Rules,
           horizon: int = 10, windows: int = 256, seed: int = 1234) -> Screened:
    """Decide which offered updates this round takes, and why each other one is left out."""
    jepa, cfg, _ = load_jepa(base_blob)
    base_state = {k: v.detach().clone() for k, v in jepa.full_state_dict().items()}
    entries, rejected, skipped = [], [], []
    for o in offered:
        u = o.update
        if u.hash in history.consumed:
            skipped.append({**u.brief(), "consumed_by": history.consumed[u.hash]})
            continue
        s = history.staleness(u.base)
        unfit = None if o.delta is None else _unfit(o.delta, base_state) or _unfit_fisher(o.fisher or {}, o.delta)
        if s is None or s > rules.max_staleness:
            rejected.append(Rejection(u.hash, "stale", f"its base {u.base[:12]} is not the serving model nor one of "
                                      f"its last {rules.max_staleness} ancestors", {"base": u.base}))
        elif o.delta is None:
            rejected.append(Rejection(u.hash, "unreadable", o.problem or "its blob could not be read"))
        elif unfit:
            rejected.append(Rejection(u.hash, "invalid", unfit))
        elif u.samples <= 0:
            rejected.append(Rejection(u.hash, "samples", f"it claims {u.samples} samples"))
        else:
            entries.append(Entry(u.hash, o.delta, u.samples, s, o.fisher))
    entries, out = screen_norm(entries, rules.norm_factor)
    rejected += out
    entries, out = screen_direction(entries, rules.min_cosine)
    rejected += out
    errors = {"serving": heldout_error(jepa, cfg, heldout, horizon, windows, seed)}
    accepted = []
    for e in entries:
        jepa.load_state_dict(combine(base_state, [e], 1.0))
        errors[e.id] = heldout_error(jepa, cfg, heldout, horizon, windows, seed)
        bound = errors["serving"] * (1 + rules.max_update_regression)
        if not errors[e.id] <= bound:  # a NaN error (predictions blown up) fails this too
            rejected.append(Rejection(e.id, "regression", f"alone it makes the held-out error at {horizon} steps "
                                      f"{errors[e.id]:.4g} m, above {bound:.4g} m (the serving model's "
                                      f"{errors['serving']:.4g} m x {1 + rules.max_update_regression:g})",
                                      {"error": errors[e.id], "serving": errors["serving"]}))
        else:
            accepted.append(e)
    return Screened(accepted, rejected, skipped, errors)


def weights_sha256(tensors: Delta) -> str:
    """A fingerprint of the weights alone (the blob's hash also covers its lineage)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _widened(config: dict[str, Any], ranges: list[dict[str, list[float]]]) -> dict[str, Any]:
    out = {k: list(v) for k, v in config["sim"]["ranges"].items()}
    for r in ranges:
        for name, (lo, hi) in r.items():
            if name in out:
                out[name] = [min(out[name][0], lo), max(out[name][1], hi)]
    return {**config, "sim": {**config["sim"], "ranges": out}}


def build_blob(base_blob: bytes, accepted: list[Entry], ranges: list[dict[str, list[float]]], rules: Rules,
               federated: dict[str, Any]) -> tuple[bytes, Config, dict[str, torch.Tensor]]:
    """The round's model: the serving weights plus the accepted updates' mean (aggregate.py), its ranges
    widened to every accepted update's, the parent's calibration kept (the weights moved by one
    averaged fine-tune, as finetune's calibrate=False keeps it), and `federated` in its lineage."""
    state = from_bytes(base_blob)
    weights = combine(model_state(base_blob), accepted, rules.server_lr, rules.merge)
    config = _widened(state["config"], ranges)
    doc = {**state, "config": config, "jepa": weights,
           "lineage": {"parent": sha256_hex(base_blob), "federated": federated}}
    return to_bytes(doc), Config.from_dict(config), weights

