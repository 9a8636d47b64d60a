"""Data parallelism with torch.distributed (torchrun, any backend; tested with 2 CPU processes on
gloo).

Every rank builds the same *global* micro-batch (its indices are a pure function of seed and
step) and runs the model on its own contiguous shard. So that the loss and the parameter
gradients equal one process over the global batch (METHOD.md section 5):

- L_g divides each rank's token-loss sum by the *global* supervised-token count;
- L_d gathers ``r`` from every rank with gradients (each rank keeps the gradient of its own
  rows, as open_clip's gather-with-grad does); prefix picks and teacher targets are computed
  for the global batch on every rank (same generator, cached teacher), so no rank needs another's
  teacher sequences;
- after backward, gradients are **summed** over ranks (:func:`sum_gradients`): each rank's
  backward holds the derivative through its own rows only.

Parameters used after the gather (a learned bandwidth, the InfoNCE temperature) let their
gradient through on rank 0 only, so the sum counts it once.

Launch: ``torchrun --nproc_per_node 2 -m sugar.cli train -c CONFIG`` (the loop reads RANK and
WORLD_SIZE from the environment; gloo: the loop trains on the CPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "Shard",
    "all_reduce_sum",
    "gather_with_grad",
    "init_from_environment",
    "sum_gradients",
]


class Shard:
    """This process's place: ``rank`` of ``world`` (1 and 0 without torch.distributed)."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world})")
        self.rank, self.world = rank, world

    @property
    def active(self) -> bool:
        return self.world > 1

    def bounds(self, count: int) -> tuple[int, int]:
        """This rank's contiguous share of ``count`` items (``ValueError`` unless divisible)."""
        if count % self.world:
            raise ValueError(f"{count} samples do not split over {self.world} ranks")
        size = count // self.world
        return self.rank * size, (self.rank + 1) * size

    def __repr__(self) -> str:
        return f"Shard(rank={self.rank}, world={self.world})"


def init_from_environment() -> Shard:
    """Join the process group torchrun describes (RANK, WORLD_SIZE); a single process
    otherwise. The loop trains on the CPU, so the backend is gloo (nccl would need CUDA
    tensors)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Shard(dist.get_rank(), dist.get_world_size())


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # Every rank computed the same global loss; its own rows' gradient is its share.
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: Tensor, shard: Shard) -> Tensor:
    """Rows of every rank, concatenated in rank order; gradient flows to this rank's rows.

    All ranks must pass the same number of rows.
    """
    if not shard.active:
        return tensor
    out: Tensor = _GatherWithGrad.apply(tensor)
    return out


def all_reduce_sum(tensor: Tensor, shard: Shard) -> Tensor:
    """The sum over ranks (no gradient)."""
    if not shard.active:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def sum_gradients(parameters: Iterable[nn.Parameter], shard: Shard) -> None:
    """Sum every parameter's gradient over ranks. A parameter no rank gave a gradient keeps
    ``None`` (as in one process, where AdamW then skips it); one that some rank did not reach
    counts zero there."""
    if not shard.active:
        return
    params = list(parameters)
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    dist.all_reduce(has, op=dist.ReduceOp.SUM)
    for parameter, count in zip(params, has.tolist(), strict=True):
        if count == 0:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
