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

With ``train.parallel=fsdp2`` the same wrapper is sharded with ``fully_shard`` instead
(:mod:`sugar.train.fsdp`): FSDP2 averages its reduce-scatter as DDP averages its all-reduce, so
the loss scaling is the same; every forward pass all-gathers parameters, so the ranks must make
the same number of passes (:func:`equal_pass_counts`, which the objective and GradCache call).

Launch: ``torchrun --nproc_per_node 2 -m sugar.cli train -c CONFIG`` (the loop reads RANK and
WORLD_SIZE from the environment; gloo on the CPU, NCCL when ``run.device`` is CUDA).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "SPARSE_ALL_REDUCE",
    "DataParallel",
    "Shard",
    "all_reduce_sum",
    "collective_device",
    "dense_embeddings",
    "equal_pass_counts",
    "gather_with_grad",
    "init_from_environment",
    "local_device",
]


class Shard:
    """This process's place: ``rank`` of ``world`` (1 and 0 without torch.distributed).

    ``lockstep``: every forward pass of the model is a collective (FSDP2 all-gathers each
    block's parameters), so every rank must run as many passes as the others
    (:func:`equal_pass_counts`)."""

    def __init__(self, rank: int = 0, world: int = 1, lockstep: bool = False) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world})")
        self.rank, self.world = rank, world
        self.lockstep = lockstep and world > 1

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
        return f"Shard(rank={self.rank}, world={self.world}, lockstep={self.lockstep})"


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


def collective_device() -> torch.device:
    """Where a tensor that only a collective uses (a count, flags) must live: the CPU on gloo,
    the current CUDA device otherwise (an NCCL process group has no CPU backend: a CPU tensor
    fails with "No backend type associated with device type cpu"; FSDP2 sets the current
    device to the rank's GPU, :func:`sugar.train.fsdp.shard_modules`)."""
    if "gloo" in str(dist.get_backend()) or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def equal_pass_counts(chunks: list[list[int]], shard: Shard | None) -> list[list[int]]:
    """``chunks`` (the row lists of this rank's forward passes), with its largest chunks halved
    until it has as many as the rank with the most, when ``shard.lockstep`` (FSDP2: a rank with
    one pass fewer would leave the others waiting in an all-gather). Each rank cuts its own
    share by length (:func:`sugar.train.states._length_chunks`), so the counts can differ;
    the shares have equal sizes, so the largest count is always reachable. Unchanged otherwise.

    >>> equal_pass_counts([[0, 1, 2], [3]], Shard())
    [[0, 1, 2], [3]]
    """
    if shard is None or not shard.lockstep:
        return chunks
    count = torch.tensor([len(chunks)], device=collective_device())
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    chunks = [list(rows) for rows in chunks]
    while len(chunks) < int(count):
        largest = max(range(len(chunks)), key=lambda i: len(chunks[i]))
        rows = chunks[largest]
        assert len(rows) > 1, "equal shares always reach the largest pass count"
        chunks[largest : largest + 1] = [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
    return chunks


SPARSE_ALL_REDUCE = ("gloo",)
"""Backends whose all-reduce takes a sparse gradient. NCCL's refuses one ("NCCL does not support
all_reduce with sparse tensors", ``ProcessGroupNCCL::allreduce_sparse`` outside Meta's NCCLX
builds), so DDP over NCCL with a sparse embedding fails at the first backward."""


def dense_embeddings(root: nn.Module) -> int:
    """Make every ``nn.Embedding`` under ``root`` that gives sparse gradients give dense ones
    (the same values; what a backend without sparse all-reduce, or FSDP2's reduce-scatter,
    needs); returns how many it changed. A lookup that reads ``module.sparse`` at each call
    (:meth:`sugar.models.minilm.MiniLMMLLM.logits`) follows."""
    changed = 0
    for module in root.modules():
        if isinstance(module, nn.Embedding) and module.sparse:
            module.sparse = False
            changed += 1
    return changed


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
    by ``DistributedDataParallel`` or, with ``engine="fsdp2"``, by FSDP2's ``fully_shard``
    (:mod:`sugar.train.fsdp`; ``layers``: the decoder blocks, each its own FSDP group). One
    process runs a plain forward and backward whatever the engine.

    DDP: sparse gradients (the MiniLM word table's) are all-reduced as they are on gloo and made
    dense first on other backends (:data:`SPARSE_ALL_REDUCE`). ``find_unused_parameters`` is
    on: a micro-batch where InfoNCE cannot run (fewer than two pairs) leaves the temperature
    unused, a run without a projector loss leaves the projector unused. Buffers are not
    broadcast (every rank builds the same model from the same seed and checkpoint). A parameter
    no rank gave a gradient keeps ``None`` (AdamW then skips it); under FSDP2
    :meth:`clip_gradients` restores that.

    ``rebuild`` (FSDP2 only): makes a plain copy of the wrapper's two modules, as a
    :class:`_Trained` of (model, objective), for :meth:`full_modules` on rank 0.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: nn.Module,
        shard: Shard,
        *,
        engine: Literal["ddp", "fsdp2"] = "ddp",
        layers: Sequence[nn.Module] = (),
        rebuild: Callable[[], tuple[nn.Module, nn.Module]] | None = None,
    ) -> None:
        self.shard = shard
        self.modules = _Trained(model, objective)
        self.wrapped: nn.Module = self.modules
        self.sharded = shard.active and engine == "fsdp2"
        self.mirror = None
        device = next(model.parameters()).device
        if self.sharded:
            from sugar.train import fsdp

            if not shard.lockstep:
                raise ValueError("engine='fsdp2' needs a Shard with lockstep=True")
            self.wrapped = fsdp.shard_modules(self.modules, layers, device)
            self.use = fsdp.GradientUse(self.wrapped, layers)
            if rebuild is not None:
                self.mirror = fsdp.Mirror(lambda: _Trained(*rebuild()))
        elif shard.active:
            if dist.get_backend() not in SPARSE_ALL_REDUCE:  # NCCL: the MiniLM word table
                dense_embeddings(self.modules)
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

    def forward(self, compute: Callable[..., Any], *arguments: Any) -> Any:
        """``compute(model, objective, *arguments)`` with no backward to follow (GradCache's
        caching passes): under FSDP2 through the sharded wrapper, whose hooks gather the
        parameters; otherwise on the modules as they are (a DDP forward expects a backward).
        Tensors that require a gradient must not leave it under FSDP2 (their backward would
        run FSDP's hooks): return them detached."""
        if self.sharded:
            return self.wrapped(compute, *arguments)
        return compute(self.modules.model, self.modules.objective, *arguments)

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
        of an optimiser step); earlier passes accumulate locally (``no_sync``). FSDP2
        reduce-scatters after every pass (:mod:`sugar.train.fsdp`). The loss is multiplied by
        the world size, so DDP's (and FSDP2's) average is the sum over ranks (module doc).
        """
        quiet = isinstance(self.wrapped, DistributedDataParallel) and not sync
        with self.wrapped.no_sync() if quiet else contextlib.nullcontext():  # type: ignore[operator]
            parts: dict[str, Tensor] = self.wrapped(compute, *arguments)
            (parts["loss"] * (scale * self.shard.world)).backward()
        return parts

    def clip_gradients(self, parameters: Sequence[Tensor], max_norm: float) -> Tensor:
        """Clip the step's gradients to a global 2-norm of ``max_norm`` (``inf``: measure only);
        returns the norm before clipping. Under FSDP2 (DTensor gradients), first averages the
        gradients of the parameters it leaves whole and drops the gradients no rank produced
        (:func:`sugar.train.fsdp.reduce_replicated`, ``drop_unused_gradients``)."""
        if not self.sharded:
            return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        from sugar.train import fsdp

        fsdp.reduce_replicated(parameters)
        fsdp.drop_unused_gradients(self.wrapped, parameters, self.use)
        return fsdp.clip_gradients(parameters, max_norm)

    def full_modules(self) -> tuple[nn.Module, nn.Module] | None:
        """(model, objective) with every parameter whole, for validation and bundles on rank 0:
        the modules themselves, or under FSDP2 the rank-0 copy loaded with the gathered state
        (a collective: every rank calls it; ``None`` on the others)."""
        if not self.sharded:
            return self.modules.model, self.modules.objective
        from sugar.train import fsdp

        state = fsdp.full_state_dict(self.wrapped)
        if state is None:
            return None
        if self.mirror is None:
            raise ValueError("DataParallel(engine='fsdp2') needs rebuild= for full_modules()")
        copy = cast(_Trained, self.mirror.load(state))
        return copy.model, copy.objective

    def training_state(self, optimiser: torch.optim.Optimizer) -> dict[str, Any] | None:
        """What a checkpoint holds of the modules and the optimiser: ``model`` (the model's
        parameters that train, by name: ``MLLM.trainable_state_dict``), ``objective`` (its
        state dict), ``optimiser`` (``torch.optim``'s layout), whole, the same under either
        engine; a collective under FSDP2 (``None`` on ranks other than 0)."""
        model, objective = self.modules.model, self.modules.objective
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        if not self.sharded:
            named = dict(model.named_parameters())
            return {
                "model": {name: named[name].detach() for name in trainable},
                "objective": objective.state_dict(),
                "optimiser": optimiser.state_dict(),
            }
        from sugar.train import fsdp

        gathered = fsdp.gather_state(self.wrapped, optimiser)
        if gathered is None:
            return None
        full, optimiser_state = gathered
        return {
            "model": {name: full[f"model.{name}"] for name in trainable},
            "objective": {
                name[len("objective.") :]: tensor
                for name, tensor in full.items()
                if name.startswith("objective.")
            },
            "optimiser": optimiser_state,
        }

    def load_optimiser_state(self, optimiser: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load a checkpoint's optimiser state (:meth:`training_state`'s layout)."""
        if not self.sharded:
            optimiser.load_state_dict(state)
            return
        from sugar.train import fsdp

        fsdp.load_optimiser_state(self.wrapped, optimiser, state)
