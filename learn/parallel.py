"""Data-parallel fine-tuning inside a region, on torch.distributed: the engine, not a home-made one.

    torchrun --standalone --nproc-per-node N --no-python .venv/bin/worldstate learn ...

torchrun starts N copies of the learner and tells each its rank (RANK, WORLD_SIZE and the
rendezvous in the environment). Each copy draws its own batches (its rank offsets the batch
seeds), and after every backward pass the gradients are averaged over the copies with one
all_reduce (gloo on CPU, nccl when the model trains on CUDA), as DistributedDataParallel does: the
copies then take the same optimizer step and hold the same weights throughout, so the global batch
is N x the batch size. Rank 0 alone reads the log, gates, publishes or announces; the others train
and exit 0 without printing. Without torchrun (WORLD_SIZE unset or 1) nothing here runs, and a
fine-tune is what it always was, byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

RANK_SEED_STRIDE = 1_000_003  # batch seeds of rank r start r x this away from rank 0's


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    size: int = 1

    @property
    def lead(self) -> bool:
        return self.rank == 0


def ranks() -> Ranks:
    """This process's place among torchrun's copies (0 of 1 when not started by torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def start() -> Ranks:
    """Join torchrun's process group when there is more than one copy; a no-op otherwise."""
    r = ranks()
    if r.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("WORLDSTATE_DEVICE") == "cuda"
                                else "gloo")
    return ranks()


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def average_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Every copy's gradients replaced by their mean over the copies (one all_reduce). A parameter no
    copy's loss reached keeps no gradient, so the optimizer leaves it untouched as it would alone."""
    r = ranks()
    if r.size <= 1:
        return
    flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                      for p in params] + [torch.tensor([float(p.grad is not None) for p in params],
                                                       device=params[0].device)])
    dist.all_reduce(flat)
    offset = 0
    had = flat[-len(params):]
    for i, p in enumerate(params):
        n = p.numel()
        p.grad = (flat[offset:offset + n] / r.size).view_as(p).clone() if had[i] > 0 else None
        offset += n


def agree(params: Sequence[torch.Tensor]) -> bool:
    """Whether every copy holds these very tensors (compared by their sum and sum of squares)."""
    if ranks().size <= 1:
        return True
    flat = torch.cat([p.detach().double().reshape(-1) for p in params])
    mine = torch.stack([flat.sum(), (flat ** 2).sum()])
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, dist.ReduceOp.MIN)
    dist.all_reduce(hi, dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))
