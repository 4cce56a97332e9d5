"""How an aggregator weighs and screens the regions' updates. Pure: tensors in, decisions out.

The combination is FedAvg with FedBuff's staleness weighting, each weight averaged by where the
regions' data informs it (merge "fisher", the default; learn/fisher.py says why):

    weight_i   = samples_i x 1 / sqrt(1 + staleness_i)
    share_i    = fisher_i / (sum of fisher_i over all its weights)    (per weight; mass 1 per update)
    mean delta = sum_i weight_i x share_i x delta_i / sum_i weight_i x share_i   (per weight)
    new model  = serving model + server_lr x mean delta

The shares say only *where* an update's information lies; how much it counts is still its samples
and staleness, so a region cannot buy influence by inflating its Fisher. Every weight of the mean
lies between the accepted updates' values for it. An update without a Fisher spreads its share
evenly over its delta; a weight no update's data informs takes the plain weighted mean, and merge
"fedavg" takes it for every weight (a tensor absent from an update counts 0 there).

staleness_i is how many publishes the update's base model is behind the serving one (0: it was
trained on the serving model). A stale delta is applied to the serving model as FedBuff does,
down-weighted; one staler than `max_staleness` is rejected.

Divergent updates are rejected, each with its rule and reason, in this order:
  stale       the base is more than `max_staleness` publishes behind, or not an ancestor at all
  norm        its norm is more than `norm_factor` (k = 3) x the median norm of the *other*
              updates: leave-one-out, so with two updates each still checks the other, and one
              region cannot move the median it is judged by
  direction   the cosine between it and the mean direction of the others (each a unit vector:
              one vote per update, so neither a claimed sample count nor a large norm can drag
              the reference) is below `min_cosine` (0: it points away from where the rest went);
              the worst goes first and the rest are judged again without it
  regression  (measured by the caller on held-out data, learn/rounds.py) applied alone to the
              serving model, its error is more than (1 + max_update_regression) x the serving model's
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

Delta = dict[str, torch.Tensor]
MERGES = ("fisher", "fedavg")

__all__ = ["MERGES", "Entry", "Rejection", "Rules", "combine", "cosine", "fisher_shares", "mean_direction",
           "screen_direction", "screen_norm", "staleness_factor", "weighted_mean"]


@dataclass(frozen=True)
class Rules:
    max_staleness: int = 2  # publishes an update's base may be behind the serving model
    norm_factor: float = 3.0  # k: reject a norm above k x the median norm of the others
    min_cosine: float = 0.0  # reject a direction whose cosine with the others' mean is below this
    max_update_regression: float = 0.0  # an update alone may not make held-out error worse at all
    server_lr: float = 1.0  # 1.0: the mean delta itself
    merge: str = "fisher"  # or "fedavg": each weight's mean by samples and staleness alone

    def __post_init__(self) -> None:
        if self.max_staleness < 0 or self.norm_factor <= 0 or self.server_lr <= 0:
            raise ValueError("max_staleness >= 0, norm_factor > 0 and server_lr > 0")
        if self.merge not in MERGES:
            raise ValueError(f"merge: one of {', '.join(MERGES)}")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError("min_cosine lies in [-1, 1]")


@dataclass
class Entry:
    """An update under consideration."""

    id: str
    delta: Delta
    samples: int
    staleness: int = 0
    fisher: Delta | None = None  # learn/fisher.py; None: no say on where its data informs the weights
    norm: float = field(init=False)

    def __post_init__(self) -> None:
        self.norm = _norm(self.delta)

    @property
    def weight(self) -> float:
        return self.samples * staleness_factor(self.staleness)


@dataclass(frozen=True)
class Rejection:
    id: str
    rule: str  # stale, unreadable, invalid, samples, norm, direction, regression
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def staleness_factor(staleness: int) -> float:
    """FedBuff's polynomial discount: 1 for a fresh base, 1/sqrt(2) one publish behind, ..."""
    if staleness < 0:
        raise ValueError("staleness >= 0")
    return 1.0 / math.sqrt(1.0 + staleness)


def _norm(delta: Delta) -> float:
    return math.sqrt(sum(float((d.double() ** 2).sum()) for d in delta.values()))


def _dot(a: Delta, b: Delta) -> float:
    return sum(float((a[k].double() * b[k].double()).sum()) for k in a.keys() & b.keys())


def cosine(a: Delta, b: Delta) -> float:
    """Cosine of two deltas over the union of their tensors (a tensor one lacks is zero there); 0 if either is zero."""
    na, nb = _norm(a), _norm(b)
    return _dot(a, b) / (na * nb) if na > 0 and nb > 0 else 0.0


def weighted_mean(entries: list[Entry], merge: str = "fedavg") -> Delta:
    """The mean delta (the module's doc): by samples and staleness, per weight by Fisher share too."""
    total = sum(e.weight for e in entries)
    if total <= 0:
        raise ValueError("no weight to average: every update has zero samples")
    out: Delta = {}
    for e in entries:
        for name, d in e.delta.items():
            term = d.double() * (e.weight / total)
            out[name] = out[name] + term if name in out else term
    if merge == "fedavg":
        return out
    num: Delta = {}
    den: Delta = {}
    for e in entries:
        for name, share in fisher_shares(e).items():
            w = share * e.weight
            num[name] = num.get(name, 0) + w * e.delta[name].double()
            den[name] = den.get(name, 0) + w
    for name in num:
        out[name] = torch.where(den[name] > 0, num[name] / den[name].clamp(min=1e-300), out[name])
    return out


def fisher_shares(e: Entry) -> Delta:
    """The update's Fisher over the tensors of its delta, normalised to mass 1 (even without one)."""
    f = {k: (e.fisher or {}).get(k) for k in e.delta}
    given = {k: v.double().clamp(min=0) for k, v in f.items() if v is not None and v.shape == e.delta[k].shape}
    mass = sum(float(v.sum()) for v in given.values())
    if mass > 0 and math.isfinite(mass):
        return {k: given.get(k, torch.zeros_like(d, dtype=torch.float64)) / mass for k, d in e.delta.items()}
    count = sum(d.numel() for d in e.delta.values())
    return {k: torch.full_like(d, 1.0 / count, dtype=torch.float64) for k, d in e.delta.items()} if count else {}


def screen_norm(entries: list[Entry], k: float) -> tuple[list[Entry], list[Rejection]]:
    """Keep the updates whose norm is at most k x the median norm of the others."""
    if len(entries) < 2:
        return list(entries), []  # nothing to compare with: the held-out evaluation still judges it
    kept, rejected = [], []
    for e in entries:
        median = statistics.median(o.norm for o in entries if o is not e)
        if e.norm > k * median:
            rejected.append(Rejection(e.id, "norm", f"norm {e.norm:.4g} is {e.norm / max(median, 1e-300):.1f}x the "
                                      f"median {median:.4g} of the other updates; the bound is {k:g}x",
                                      {"norm": e.norm, "median_of_others": median, "k": k}))
        else:
            kept.append(e)
    return kept, rejected


def mean_direction(entries: list[Entry]) -> Delta:
    """The mean of the updates' unit vectors (a zero update has no direction and no vote)."""
    out: Delta = {}
    for e in entries:
        if e.norm <= 0:
            continue
        for name, d in e.delta.items():
            term = d.double() / e.norm
            out[name] = out[name] + term if name in out else term
    return out


def screen_direction(entries: list[Entry], min_cosine: float) -> tuple[list[Entry], list[Rejection]]:
    """Reject, worst first, updates pointing away from the mean direction of the others."""
    kept, rejected = list(entries), []
    while len(kept) >= 2:
        scored = [(cosine(e.delta, mean_direction([o for o in kept if o is not e])), e) for e in kept]
        worst_cos, worst = min(scored, key=lambda s: s[0])
        if worst_cos >= min_cosine:
            break
        kept.remove(worst)
        rejected.append(Rejection(worst.id, "direction", f"cosine {worst_cos:.3f} with the mean direction of the "
                                  f"other updates; the bound is >= {min_cosine:g}", {"cosine": worst_cos}))
    return kept, rejected


def combine(base: Delta, entries: list[Entry], server_lr: float = 1.0, merge: str = "fedavg") -> Delta:
    """The serving model's tensors plus server_lr x the mean delta, in each tensor's own dtype."""
    if not entries:
        return {k: v.clone() for k, v in base.items()}
    mean = weighted_mean(entries, merge)
    out = {k: v.clone() for k, v in base.items()}
    for name, d in mean.items():
        start = out.get(name)
        dtype = start.dtype if start is not None else torch.float32
        out[name] = ((start.double() if start is not None else torch.zeros_like(d)) + server_lr * d).to(dtype)
    return out
