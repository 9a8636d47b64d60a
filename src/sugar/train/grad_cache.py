"""GradCache for L_d and InfoNCE (``train.embedding_chunk``): Gao, Zhang, Han and Callan,
"Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup" (RepL4NLP 2021).

Shapes: n_local L_d prefixes and B_local samples of this rank, P projector width.

L_d and InfoNCE couple every vector of the retrieval micro-batch, so one backward over them
keeps the activations of the whole batch alive: memory grows with n. Their losses depend on the
model only through the vectors ``r``, so the gradient factors as
``dL/dtheta = sum_i (dL/dr_i) . (dr_i/dtheta)``, and one micro-batch becomes:

1. L_g on the generative micro-batch, its own forward and backward (as without GradCache);
2. the retrieval samples encoded in length-sorted chunks of at most ``embedding_chunk`` with no
   graph, their ``r`` cached (L_d's prefixes and every sample's final prefix);
3. L_d and InfoNCE on the cached vectors (leaves), and their gradients ``g_i = dL/dr_i`` and
   those of the parameters used after the gather (the InfoNCE temperature, a learned
   bandwidth), without touching any ``.grad``;
4. each chunk encoded again *with* a graph and ``sum_i r_i . g_i`` backpropagated, so the model
   and the projector receive exactly the gradient of step 3; the last chunk also carries
   ``theta . g_theta`` for the parameters of step 3, so they reach ``.grad`` through the same
   data-parallel pass.

Memory then grows with the chunk, not with n, for one more forward pass of the retrieval batch.
Dropout draws the same masks in steps 2 and 4 (the torch random state of each chunk is replayed;
afterwards it is where one pass per chunk would leave it). Under data parallelism every pass is
a :meth:`~sugar.train.distributed.DataParallel.forward_backward`; only the last of a step
all-reduces, and the gather-with-gradient of step 3 gives each rank the ``g`` of its own rows.
Steps 2 and 3 are :meth:`~sugar.train.distributed.DataParallel.forward` passes, which under
FSDP2 (``train.parallel=fsdp2``) run inside the sharded wrapper so that its parameters are
gathered; every rank then runs as many chunks
(:func:`~sugar.train.distributed.equal_pass_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from sugar.data.schema import Sample
from sugar.models.base import MLLM
from sugar.train.distributed import DataParallel, Shard, equal_pass_counts
from sugar.train.objective import SugarObjective
from sugar.train.states import ChunkedStates, PrefixPlan, _length_chunks

__all__ = ["cached_forward_backward"]

_AFTER_GATHER = ("logit_scale", "log_bandwidth")
"""The objective's parameters used after the gather (the InfoNCE temperature, a learned
bandwidth), by name: under FSDP2 each pass sees its own unsharded parameter object."""


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _encode(
    model: Any, objective: Any, samples: Sequence[Sample], rows: list[int], root: str | Path
) -> ChunkedStates:
    """The hidden states of ``samples[rows]`` in one forward pass, as one chunk of all of
    ``samples``."""
    batch = model.collate(
        [samples[i] for i in rows], root, slice_text_by=objective.options.slice_text_by
    )
    return ChunkedStates(len(samples), [(rows, model(batch).hidden, batch.spans)])


def _dot(vectors: Tensor | None, gradients: Tensor | None) -> Tensor:
    if vectors is None or gradients is None:
        return torch.zeros(())
    return (vectors * gradients.to(vectors.dtype)).sum()


def cached_forward_backward(
    parallel: DataParallel,
    samples: Sequence[Sample],
    retrieval: Sequence[Sample],
    root: str | Path,
    generator: torch.Generator | None,
    shard: Shard,
    chunk: int,
    *,
    scale: float = 1.0,
    sync: bool = True,
) -> dict[str, Tensor]:
    """The gradients of one micro-batch's objective (L_g on ``samples``, L_d and InfoNCE on the
    global retrieval micro-batch ``retrieval``) accumulated into ``.grad`` (times ``scale``),
    with the retrieval batch encoded in chunks of at most ``chunk`` samples (module doc).

    Returns the detached parts :class:`~sugar.train.objective.SugarObjective` would return
    (``loss`` included). ``sync``: whether the last pass all-reduces the step's gradients.
    """
    if chunk < 1:
        raise ValueError(f"embedding_chunk={chunk}: must be >= 1")
    model = cast(MLLM, parallel.modules.model)
    objective = cast(SugarObjective, parallel.modules.objective)
    if objective.hard_negatives:
        raise ValueError(
            "train.embedding_chunk (GradCache) does not support contrastive.hard_negatives "
            f"({objective.hard_negatives}): set one of them to 0"
        )
    device = next(model.parameters()).device

    # 1. L_g: its own pass, gradients kept locally until the step's last pass.
    def generative(model: Any, objective: Any) -> dict[str, Tensor]:
        logged, share = objective.generative_parts(model, samples, root, shard)
        return {**logged, "loss": objective.weights.total({"lm_loss": share})}

    parts = {
        k: v.detach()
        for k, v in parallel.forward_backward(generative, scale=scale, sync=False).items()
    }

    # 2. the retrieval vectors, chunk by chunk, without a graph
    plan: PrefixPlan = objective.prefix_plan(retrieval, generator, shard)
    local = list(retrieval[plan.lo : plan.hi])
    chunks = equal_pass_counts(_length_chunks(range(len(local)), local, chunk), shard)
    local_samples, _ = plan.local_prefixes()
    where = [torch.isin(local_samples, torch.tensor(rows)) for rows in chunks]  # prefixes'

    def cache(model: Any, objective: Any) -> tuple[list[Any], list[Any]]:
        vectors, states = [], []
        for rows in chunks:
            states.append(_rng_state(device))
            encoded = _encode(model, objective, local, rows, root)
            vectors.append(objective.embed_plan(encoded, plan, rows))
        return vectors, states

    with torch.no_grad():
        cached, states = parallel.forward(cache)
    after = _rng_state(device)
    r_prefixes = r_finals = None
    if objective.weights.alpha > 0:
        first = next(c[0] for c in cached if c[0] is not None)
        r_prefixes = first.new_zeros(len(local_samples), first.shape[1])
        for mask, (vectors, _) in zip(where, cached, strict=True):
            assert vectors is not None
            r_prefixes[mask] = vectors
        r_prefixes.requires_grad_()
    if objective.weights.contrastive > 0:
        first = next(c[1] for c in cached if c[1] is not None)
        r_finals = first.new_zeros(len(local), first.shape[1])
        for rows, (_, vectors) in zip(chunks, cached, strict=True):
            assert vectors is not None
            r_finals[torch.tensor(rows)] = vectors
        r_finals.requires_grad_()

    # 3. the losses on the cached vectors, and their gradients (no .grad is touched); the
    # cached vectors enter by closure, not as arguments, so FSDP2 hooks none of them
    def losses(model: Any, objective: Any) -> tuple[dict[str, Tensor], list[Tensor | None]]:
        found = objective.retrieval_parts(model, r_prefixes, r_finals, plan, retrieval, root)
        zero = torch.zeros((), device=device)
        total = objective.weights.total({**found, "lm_loss": zero})
        after_gather = [getattr(objective, name) for name in _AFTER_GATHER]
        inputs = [t for t in (r_prefixes, r_finals) if t is not None]
        inputs += [p for p in after_gather if p.requires_grad]
        grads: Sequence[Tensor | None] = [None] * len(inputs)
        if total.requires_grad:
            grads = torch.autograd.grad(total, inputs, allow_unused=True)
        return {k: v.detach() for k, v in found.items()}, list(grads)

    retrieval_parts, grads = parallel.forward(losses)
    g_prefixes = grads.pop(0) if r_prefixes is not None else None
    g_finals = grads.pop(0) if r_finals is not None else None
    trained = [name for name in _AFTER_GATHER if getattr(objective, name).requires_grad]
    g_after = dict(zip(trained, grads, strict=True))

    # 4. each chunk again, with a graph: backward of sum_i r_i . g_i
    for c, rows in enumerate(chunks):
        last = c == len(chunks) - 1

        def surrogate(model: Any, objective: Any, c: int = c, rows: list[int] = rows,
                      last: bool = last) -> dict[str, Tensor]:  # fmt: skip
            _set_rng_state(states[c], device)
            vectors, finals = objective.embed_plan(
                _encode(model, objective, local, rows, root), plan, rows
            )
            loss = _dot(vectors, None if g_prefixes is None else g_prefixes[where[c]])
            loss = loss + _dot(finals, None if g_finals is None else g_finals[torch.tensor(rows)])
            if last:  # the parameters used after the gather, through the same pass
                for name, gradient in g_after.items():
                    if gradient is not None:
                        loss = loss + (getattr(objective, name) * gradient).sum()
            return {"loss": loss}

        parallel.forward_backward(surrogate, scale=scale, sync=sync and last)
    _set_rng_state(after, device)
    parts.update({k: v.detach() for k, v in retrieval_parts.items()})
    parts["loss"] = objective.weights.total(parts)
    return parts
