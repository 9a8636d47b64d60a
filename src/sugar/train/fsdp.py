"""FSDP2 for ``train.parallel=fsdp2``: PyTorch's ``fully_shard`` over the model and the objective.

:func:`shard_modules` applies ``torch.distributed.fsdp.fully_shard`` bottom-up: to each decoder
block (:meth:`sugar.models.base.MLLM.decoder_layers`; with LoRA these are the adapted blocks,
frozen base weights and trainable adapters in one group), then to the wrapper that holds the
model and the objective (:class:`sugar.train.distributed.DataParallel`), whose group keeps the
rest: embeddings, vision adapter, head, a frozen vision encoder, the retrieval projector, the
temperature and the bandwidth. Each rank then holds 1/world of every parameter, of its gradient
and of its AdamW moments; a block's whole parameters exist only while it runs (all-gathered in
its forward and again in its backward, freed after).

What this takes, and why:

- **Frozen and trainable parameters in one group** (a LoRA block: frozen base weights beside
  trainable adapters): FSDP2 all-gathers both and reduce-scatters only parameters that require
  a gradient, so mixing them is correct (the FSDP1 ``use_orig_params=False`` pitfall does not
  apply); a large base's blocks are where sharding saves the most.
- **Frozen parameters outside the blocks** (a vision tower, the tiny model's EfficientNet, a
  LoRA base's embeddings and head) stay whole on every rank (``ignored_params``): the root
  group is gathered for the whole forward of a step (the step runs inside its forward) and
  again for its backward, so a sharded frozen weight would cost its full size at the peak *plus*
  its shard, and it has no gradient or moment to save (measured on the tiny model,
  ``benchmarks/probe_fsdp2.py --memory``: the peak was 31 % above DDP's before this rule).
- **Unused parameters.** Which parameters a rank uses can depend on its share (a share without
  images never calls the vision adapter; the InfoNCE temperature passes its gradient on rank 0
  only). ``set_reduce_scatter_unused_params(True)`` makes every rank reduce the same set (zeros
  for its unused ones), as DDP's ``find_unused_parameters`` does. One process leaves a parameter
  that nothing used without a gradient (AdamW skips it: no moment update, no weight decay), so
  :class:`GradientUse` records which parameters autograd reached on each rank and
  :func:`drop_unused_gradients` sets back to ``None`` the gradients no rank produced. (Zero is
  not the test: LoRA's ``A`` matrices get an exact zero gradient while ``B`` is zero, and one
  process applies weight decay to them.)
- **Sparse gradients** cannot be reduce-scattered: the MiniLM word embeddings' sparse
  gradients are turned dense (the same values; the loop densifies them before clipping anyway).
- **Scalar parameters** (the InfoNCE temperature, the learned bandwidth): ``fully_shard`` cannot
  shard a 0-d tensor, so they are its ``ignored_params``, whole on every rank, and
  :func:`reduce_replicated` averages their gradients (one all-reduce of a few numbers).
- **Gradient clipping** on DTensor gradients: the global norm is
  ``torch.nn.utils.get_total_norm`` made whole with ``full_tensor()`` (what torchtitan does),
  combined with the whole parameters' norm, then ``clip_grads_with_norm_``.
- **Checkpoints** keep sugar's format (safetensors + JSON, :mod:`sugar.train.checkpoint`):
  ``torch.distributed.checkpoint``'s own loader reads a pickled metadata file, so instead
  :func:`gather_state` collects the full model and optimiser state dicts on rank 0
  (``get_model_state_dict`` / ``get_optimizer_state_dict`` with ``full_state_dict=True,
  cpu_offload=True``) and turns the optimiser's (keyed by parameter name) into
  ``torch.optim``'s own layout (keyed by position), which is what a DDP run writes; a resume
  loads the model before sharding and the optimiser with ``set_optimizer_state_dict``. So a
  checkpoint resumes on any world size, under ddp or fsdp2 alike.
- **Validation and bundles** need the whole model on rank 0 alone, which sharded modules cannot
  give (their forward is a collective): :class:`Mirror` is a second, plain copy built on rank 0
  the first time one is needed, loaded with the gathered state before each evaluation and each
  bundle. It costs one unsharded copy of the model in rank 0's memory from then on.
- Every forward pass all-gathers, so the ranks must run the same number of passes
  (:func:`sugar.train.distributed.equal_pass_counts`). Gradients are reduce-scattered after
  every backward pass (no ``no_sync``: accumulating unsharded gradients would give back the
  memory FSDP saves).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, init_device_mesh

from sugar.train.distributed import collective_device, dense_embeddings

__all__ = [
    "GradientUse",
    "Mirror",
    "clip_gradients",
    "drop_unused_gradients",
    "full_state_dict",
    "gather_state",
    "load_optimiser_state",
    "reduce_replicated",
    "shard_modules",
]

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_modules(root: nn.Module, layers: Sequence[nn.Module], device: torch.device) -> nn.Module:
    """``root`` (the model and the objective in one module) with ``fully_shard`` applied to each
    of ``layers`` and then to ``root``, over all ranks of the default process group (module
    doc). Scalar parameters (the temperature, the bandwidth), which ``fully_shard`` refuses,
    and frozen parameters outside the blocks stay whole on every rank. Returns ``root``, now an
    ``FSDPModule``."""
    dense_embeddings(root)  # a sparse gradient cannot be reduce-scattered
    if device.type == "cuda":  # the mesh is on the current device: this rank's GPU
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    in_layers = {id(parameter) for layer in layers for parameter in layer.parameters()}
    whole = {
        parameter
        for parameter in root.parameters()
        if parameter.dim() == 0 or (not parameter.requires_grad and id(parameter) not in in_layers)
    }
    for layer in layers:
        fully_shard(layer, mesh=mesh, ignored_params=whole)
    sharded: Any = fully_shard(root, mesh=mesh, ignored_params=whole)
    sharded.set_reduce_scatter_unused_params(True)
    return root


def reduce_replicated(parameters: Sequence[Tensor]) -> None:
    """Average the gradients of the parameters FSDP2 leaves whole (not DTensors) over ranks, as
    it averages the others: a rank without a gradient counts as zero, and a parameter that no
    rank gave a gradient keeps ``None``. One all-reduce (of a few scalars in sugar)."""
    whole = [p for p in parameters if not isinstance(p, DTensor)]
    if not whole:
        return
    pieces = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in whole]
    flags = torch.tensor([float(p.grad is not None) for p in whole], dtype=pieces[0].dtype)
    flat = torch.cat([*pieces, flags.to(pieces[0].device)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    world = dist.get_world_size()
    offset = 0
    for parameter, flag in zip(whole, flat[-len(whole) :].tolist(), strict=True):
        part = flat[offset : offset + parameter.numel()].view_as(parameter) / world
        parameter.grad = part.clone() if flag else None
        offset += parameter.numel()


class GradientUse:
    """Which sharded parameters autograd gave a gradient on this rank since :meth:`clear`.

    After ``fully_shard`` a parameter is a sharded DTensor between passes and an unsharded
    tensor (one object, kept for the run) while its module runs; a forward pre-hook, run after
    FSDP's own (which unshards), puts a ``post_accumulate_grad`` hook on each unsharded
    parameter the first time it is seen. FSDP's zero gradients for unused parameters do not
    pass through autograd, so they do not count; a zero gradient that autograd computed (a LoRA
    ``A`` matrix while ``B`` is still zero) does, as in one process."""

    def __init__(self, root: nn.Module, layers: Sequence[nn.Module]) -> None:
        self.used: set[str] = set()
        self._hooked: set[int] = set()
        self._sharded = {n for n, p in root.named_parameters() if isinstance(p, DTensor)}
        prefixes = {id(module): name for name, module in root.named_modules()}
        for module in (root, *layers):
            module.register_forward_pre_hook(functools.partial(self._watch, prefixes[id(module)]))

    def _watch(self, prefix: str, module: nn.Module, arguments: Any) -> None:
        for name, parameter in module.named_parameters(prefix=prefix):
            if (
                isinstance(parameter, DTensor)  # another group's, sharded now
                or not parameter.requires_grad
                or name not in self._sharded
                or id(parameter) in self._hooked
            ):
                continue
            parameter.register_post_accumulate_grad_hook(lambda _, name=name: self.used.add(name))
            self._hooked.add(id(parameter))

    def clear(self) -> None:
        self.used.clear()


def drop_unused_gradients(root: nn.Module, parameters: Sequence[Tensor], use: GradientUse) -> None:
    """Set ``.grad`` to ``None`` for each sharded parameter that autograd gave no gradient on
    any rank since the last call (FSDP2 fills in zeros for them), as one process leaves a
    parameter nothing used (module doc). One all-reduce; clears ``use``."""
    names = _names(root)
    sharded = [p for p in parameters if isinstance(p, DTensor)]
    used = [float(names[id(p)] in use.used) for p in sharded]
    flags = torch.tensor(used, device=collective_device())  # NCCL: not on the CPU
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    for parameter, flag in zip(sharded, flags.tolist(), strict=True):
        if not flag:
            parameter.grad = None
    use.clear()


def clip_gradients(parameters: Sequence[Tensor], max_norm: float) -> Tensor:
    """Scale the gradients so that their global 2-norm is at most ``max_norm`` (``inf``: no
    scaling); returns the norm before clipping. DTensor gradients (sharded over ranks) count
    whole, so the norm is the number ``clip_grad_norm_`` gives in one process."""
    sharded = [p for p in parameters if isinstance(p, DTensor) and p.grad is not None]
    whole = [p for p in parameters if not isinstance(p, DTensor) and p.grad is not None]
    if not (sharded or whole):
        return torch.zeros(())
    squares = torch.zeros((), dtype=torch.float64)
    for group in (sharded, whole):
        if group:
            grads = [p.grad for p in group if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            if isinstance(norm, DTensor):
                norm = norm.full_tensor()
            squares = squares + norm.double().cpu() ** 2
    first = (sharded or whole)[0].grad
    assert first is not None
    total = squares.sqrt().to(dtype=first.dtype)  # the dtype clip_grad_norm_ returns
    for group in (sharded, whole):
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


def _names(root: nn.Module) -> dict[int, str]:
    return {id(parameter): name for name, parameter in root.named_parameters()}


def full_state_dict(root: nn.Module) -> dict[str, Tensor] | None:
    """The whole state dict of the sharded ``root`` on rank 0 (CPU tensors), ``None`` on the
    others; a collective."""
    state: dict[str, Any] = get_model_state_dict(root, options=_FULL)
    return dict(state) if dist.get_rank() == 0 else None


def gather_state(
    root: nn.Module, optimiser: torch.optim.Optimizer
) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """(the full state dict of ``root``, the optimiser's state in ``torch.optim``'s positional
    layout) on rank 0, ``None`` on the others; a collective (every rank calls it). Tensors are
    whole and on the CPU."""
    model_state = full_state_dict(root)
    by_name: dict[str, Any] = get_optimizer_state_dict(root, optimiser, options=_FULL)
    if model_state is None:
        return None
    names = _names(root)
    groups = optimiser.state_dict()["param_groups"]  # hyper-parameters only (no tensors)
    state: dict[int, Any] = {}
    position = 0
    for group in optimiser.param_groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            if name in by_name["state"]:
                state[position] = by_name["state"][name]
            position += 1
    return model_state, {"state": state, "param_groups": groups}


def load_optimiser_state(
    root: nn.Module, optimiser: torch.optim.Optimizer, saved: dict[str, Any]
) -> None:
    """Load an optimiser state in ``torch.optim``'s positional layout (a checkpoint's, written
    under ddp or fsdp2) into the optimiser of the sharded ``root``; every rank calls it with the
    same ``saved``, and keeps its shard of each moment."""
    names = _names(root)
    ordered = [names[id(p)] for group in optimiser.param_groups for p in group["params"]]
    groups = saved["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimiser.param_groups]:
        raise ValueError(
            "the checkpoint's optimiser groups hold "
            f"{[len(g['params']) for g in groups]} parameters, this run's "
            f"{[len(g['params']) for g in optimiser.param_groups]}"
        )
    by_name: Any = {
        "state": {ordered[int(position)]: value for position, value in saved["state"].items()},
        "param_groups": [
            {**group, "params": [ordered[int(i)] for i in group["params"]]} for group in groups
        ],
    }
    set_optimizer_state_dict(
        root, optimiser, by_name, options=StateDictOptions(full_state_dict=True)
    )


class Mirror:
    """A plain copy of the model and the objective on rank 0 (validation and bundles), built by
    ``build`` the first time :meth:`load` is called. ``build`` runs with the random states saved
    and restored, so building the copy leaves the training run's draws as they were."""

    def __init__(self, build: Callable[[], nn.Module]) -> None:
        self._build = build
        self.modules: nn.Module | None = None

    def load(self, state: dict[str, Tensor]) -> nn.Module:
        """The copy, holding ``state`` (a full state dict of the sharded root)."""
        if self.modules is None:
            python = random.getstate()
            devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):
                self.modules = self._build()
            random.setstate(python)
        self.modules.load_state_dict(state)
        return self.modules
