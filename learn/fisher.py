"""Where a region's data informs the weights: the diagonal empirical Fisher of its fine-tuned model.

An update's delta says how far each weight moved; it does not say whether the region's data had
anything to say about that weight. Two regions that watch different parts of a world teach
different weights (a light draught excites the adaptation gain's low-magnitude bands, a strong one
its high bands), and plain FedAvg dilutes each region's lesson by the others' near-zero deltas on
weights their data never touched. So every update carries, beside its delta, the mean squared
gradient of the prediction loss on its own world windows at its fine-tuned weights (the diagonal
of the empirical Fisher information), and the aggregator averages each weight by it
(learn/aggregate.py; Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", 2022).
"""
from __future__ import annotations

import torch

from world_model.config import Config
from world_model.model import JEPA
from world_model.simulator import Rollouts, sample_windows

Delta = dict[str, torch.Tensor]

BATCHES = 16  # small batches: a large one averages the per-sample gradients towards zero at a fit
BATCH_SIZE = 8
SEED = 424_242  # windows drawn apart from the fine-tune's own


def diagonal_fisher(jepa: JEPA, cfg: Config, world: Rollouts, names: list[str], batches: int = BATCHES,
                    batch_size: int = BATCH_SIZE, seed: int = SEED) -> Delta:
    """Mean squared gradient of the state loss per weight of `names`, over `batches` seeded batches
    of the world's windows. A weight no window reaches gets exactly 0."""
    params = dict(jepa.named_parameters())
    wanted = [params[n] for n in names]
    was = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in names)
    length = cfg.model.window + cfg.train.rollout_k
    out = {n: torch.zeros_like(p) for n, p in zip(names, wanted)}
    try:
        for b in range(batches):
            gen = torch.Generator().manual_seed(seed + b)
            frames, actions, physics = sample_windows(world, length, batch_size, gen)
            loss = jepa.loss(frames, actions, physics, cfg.train, gen)["state"]
            grads = torch.autograd.grad(loss, wanted, allow_unused=True)  # a term the world never uses: None
            for n, g in zip(names, grads):
                if g is not None:
                    out[n] += g.detach() ** 2 / batches
    finally:
        for n, p in params.items():
            p.requires_grad_(was[n])
    return out
