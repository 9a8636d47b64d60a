"""Data parallelism with torch.distributed (torchrun, any backend; tested with 2 CPU processes on
gloo).

Every rank builds the same *global* micro-batch (its indices are a pure function of seed and
step) and runs the model on its own contiguous shard. So that the loss and the parameter
gradients equal one process over the global batch (METHOD.md section 5):

- L_g divides each rank's token-loss sum by the *global* supervised-token count;
- L_d and InfoNCE gather ``r`` from every rank with gradients (each rank keeps the gradient of
  its own rows, as open_clip's gather-with-grad does); prefix picks and teacher targets are
  computed for the global batch on every rank (same generator, cached teacher), so no rank
  needs another's teacher sequences;
- so each rank's backward holds the derivative through its own rows only, and the global
  gradient is the **sum** over ranks. PyTorch's ``DistributedDataParallel`` (bucketed
  all-reduce that overlaps the backward) *averages*, so :meth:`DataParallel.forward_backward`
  multiplies the loss by the world size before backward (open_clip's scaling, the other way
  round).

Parameters used after the gather (a learned bandwidth, the InfoNCE temperature) let their
gradient through on rank 0 only, so the sum counts it once.

:class:`DataParallel` wraps the model **and** the objective in one module (the objective owns
the retrieval projector, the temperature and the bandwidth), so one ``DistributedDataParallel``
reduces every trainable parameter; each forward goes through it as a closure over both, so the
objective keeps calling the model as before and a step may make several forward-backward passes
(GradCache, :mod:`sugar.train.grad_cache`) with only the last one synchronised.

Launch: ``torchrun --nproc_per_node 2 -m sugar.cli train -c CONFIG`` (the loop reads RANK and
WORLD_SIZE from the environment; gloo on the CPU, NCCL when ``run.device`` is CUDA).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DataParallel",
    "Shard",
    "all_reduce_sum",
    "gather_with_grad",
    "init_from_environment",
    "local_device",
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


def init_from_environment(device: torch.device | None = None) -> Shard:
    """Join the process group torchrun describes (RANK, WORLD_SIZE); a single process
    otherwise. The backend is NCCL for a CUDA ``device``, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard()
    if not dist.is_initialized():
        cuda = device is not None and device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo")
    return Shard(dist.get_rank(), dist.get_world_size())


def local_device(device: torch.device, shard: Shard) -> torch.device:
    """This rank's device: under several ranks on CUDA, ``cuda:LOCAL_RANK`` (torchrun sets it;
    one GPU per process, as NCCL requires); otherwise ``device`` as it is."""
    if device.type != "cuda" or not shard.active:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK={local}: this machine has {torch.cuda.device_count()} CUDA devices; "
            "start at most that many processes per node (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local)


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


class _Trained(nn.Module):
    """The model and the objective as one module: ``forward(compute, *arguments)`` returns
    ``compute(model, objective, *arguments)``, so every forward of a step goes through the one
    ``DistributedDataParallel`` that holds all trainable parameters."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(
        self, compute: Callable[..., dict[str, Tensor]], *arguments: Any
    ) -> dict[str, Tensor]:
        return compute(self.model, self.objective, *arguments)


class DataParallel:
    """Forward-backward passes of the model and the objective, their gradients summed over ranks
    by ``DistributedDataParallel`` (a plain forward and backward in one process).

    ``find_unused_parameters`` is on: a micro-batch where InfoNCE cannot run (fewer than two
    pairs) leaves the temperature unused, a run without a projector loss leaves the projector
    unused. Buffers are not broadcast (every rank builds the same model from the same seed and
    checkpoint). A parameter no rank gave a gradient keeps ``None`` (AdamW then skips it).
    """

    def __init__(self, model: nn.Module, objective: nn.Module, shard: Shard) -> None:
        self.shard = shard
        self.modules = _Trained(model, objective)
        self.wrapped: nn.Module = self.modules
        if shard.active:
            device = next(model.parameters()).device
            # torch 2.13 renamed broadcast_buffers (deprecated there) to forward_sync_buffers
            options = inspect.signature(DistributedDataParallel.__init__).parameters
            renamed = "forward_sync_buffers" in options
            buffers: dict[str, Any] = {
                "forward_sync_buffers" if renamed else "broadcast_buffers": False
            }
            self.wrapped = DistributedDataParallel(
                self.modules,
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=True,
                gradient_as_bucket_view=True,
                **buffers,
            )

    def forward_backward(
        self,
        compute: Callable[..., dict[str, Tensor]],
        *arguments: Any,
        scale: float = 1.0,
        sync: bool = True,
    ) -> dict[str, Tensor]:
        """Run ``compute(model, objective, *arguments)`` (it returns named parts with ``loss``,
        this rank's share of the global loss), backward ``scale * loss``, and return the parts.

        ``sync``: whether this pass all-reduces the gradients accumulated so far (the last pass
        of an optimiser step); earlier passes accumulate locally (``no_sync``). The loss is
        multiplied by the world size, so DDP's average is the sum over ranks (module doc).
        """
        quiet = isinstance(self.wrapped, DistributedDataParallel) and not sync
        with self.wrapped.no_sync() if quiet else contextlib.nullcontext():  # type: ignore[operator]
            parts: dict[str, Tensor] = self.wrapped(compute, *arguments)
            (parts["loss"] * (scale * self.shard.world)).backward()
        return parts
