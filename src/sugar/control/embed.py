"""Query embeddings steered by an instruction through a :class:`~sugar.control.ControlBranch`.

Shapes: B queries, T tokens, D width, J joins, P projector width.

One query costs two passes of the frozen model: one over ``[instruction, query...]`` whose last
hidden states the branch reads, and one over the query alone with the branch's control vectors
added after the first J decoder blocks (:func:`sugar.control.branch.joined`). The vector is
read from the second pass exactly as :func:`sugar.embed.embed_samples` reads a sample's (its
final prefix through the frozen retrieval projector, whose output the branch's experts, if it
has any, map before the normalisation), so with zero joins and experts it *is* the base
model's vector. Documents are never embedded here: they stay the base model's.

The first pass does not depend on the branch, so a caller that embeds the same queries many
times (training: every step, mining, validation) reads them once with
:func:`read_instructions` and passes the ``readings``; the vectors are the same up to float
rounding (the branch masks padding and has no positions of its own, so how a batch of
readings is padded does not matter).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from sugar.control.branch import ControlBranch, joined
from sugar.data.schema import Sample, Segment
from sugar.models.base import MLLM
from sugar.models.prefix import RetrievalProjector, embed_prefixes

__all__ = ["embed_instructed", "instructed", "instructed_vectors", "padded", "read_instructions"]


def instructed(sample: Sample, instruction: str) -> Sample:
    """``sample`` with ``instruction`` as a context text segment before its segments (the
    E5 / GritLM way of giving an instruction as text, and what the branch reads)."""
    segments = [Segment.text_(instruction), *sample.segments]
    return Sample(sample.id, segments, sample.task, dict(sample.meta))


def _checked(
    instructions: Sequence[str], count: int, readings: Sequence[Tensor] | None = None
) -> None:
    if len(instructions) != count:
        raise ValueError(f"{len(instructions)} instructions for {count} queries")
    if readings is not None and len(readings) != count:
        raise ValueError(f"{len(readings)} readings for {count} queries")
    for i, text in enumerate(instructions):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"instructions[{i}] = {text!r}: a non-empty text")


@torch.no_grad()
def read_instructions(
    model: MLLM,
    samples: Sequence[Sample],
    instructions: Sequence[str],
    root: str | Path,
    *,
    batch_size: int = 64,
    slice_text_by: Literal["sentence", "segment"] = "sentence",
) -> list[Tensor]:
    """The frozen model's last hidden states over ``[instruction, query...]`` of each sample,
    its real tokens only, float32 on the CPU: what the branch reads. # B x (T_i, D)

    The caller sets modes: the frozen ``model`` should be in eval mode (no dropout)."""
    _checked(instructions, len(samples))
    out: list[Tensor] = []
    for start in range(0, len(samples), batch_size):
        stop = start + batch_size
        prefixed = [instructed(s, text) for s, text in
                    zip(samples[start:stop], instructions[start:stop], strict=True)]  # fmt: skip
        read = model.collate(prefixed, root, slice_text_by=slice_text_by)
        states = model(read).hidden.float().cpu()  # (b, T', D)
        mask = read.attention_mask.bool().cpu()  # (b, T')
        out += [states[i][mask[i]] for i in range(len(prefixed))]
    return out


def padded(readings: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Readings of :func:`read_instructions` as one right-padded batch and its mask (true at
    real tokens). # (B, T, D), (B, T)"""
    if not readings:
        raise ValueError("no readings to pad")
    states = torch.nn.utils.rnn.pad_sequence(list(readings), batch_first=True)  # (B, T, D)
    lengths = torch.tensor([len(r) for r in readings])
    mask = torch.arange(states.shape[1])[None, :] < lengths[:, None]  # (B, T)
    return states, mask


def instructed_vectors(
    model: MLLM,
    projector: RetrievalProjector,
    branch: ControlBranch,
    samples: Sequence[Sample],
    instructions: Sequence[str],
    root: str | Path,
    *,
    image_pool: Literal["mean", "last"] = "mean",
    slice_text_by: Literal["sentence", "segment"] = "sentence",
    readings: Sequence[Tensor] | None = None,
) -> Tensor:
    """Unit query vectors of one batch, differentiable with respect to the branch. # (B, P)

    ``readings``: the samples' :func:`read_instructions`, to skip the first pass. The caller
    sets modes: the frozen ``model`` should be in eval mode (no dropout)."""
    _checked(instructions, len(samples), readings)
    device = next(branch.parameters()).device
    if readings is None:
        readings = read_instructions(
            model, samples, instructions, root, batch_size=max(1, len(samples)),
            slice_text_by=slice_text_by,
        )  # fmt: skip
    states, mask = padded(readings)  # (B, T', D), (B, T')
    pooled = branch.read(states.to(device), mask.to(device))  # (B, D)
    control = branch.controls(pooled)  # (J, B, D or 2D)
    batch = model.collate(samples, root, slice_text_by=slice_text_by)
    with joined(model.decoder_layers(), control, branch.join):
        hidden = model(batch).hidden  # (B, T, D)
    b = torch.arange(len(samples))
    e = torch.tensor([len(spans) - 1 for spans in batch.spans])
    steer = partial(branch.steer_output, pooled)  # the projector's output as is without experts
    return embed_prefixes(hidden, batch.spans, b, e, projector, image_pool, steer)


@torch.no_grad()
def embed_instructed(
    model: MLLM,
    projector: RetrievalProjector,
    branch: ControlBranch,
    samples: Sequence[Sample],
    instructions: Sequence[str],
    root: str | Path,
    *,
    batch_size: int = 32,
    image_pool: Literal["mean", "last"] = "mean",
    slice_text_by: Literal["sentence", "segment"] = "sentence",
    readings: Sequence[Tensor] | None = None,
) -> Tensor:
    """:func:`instructed_vectors` in batches, in eval mode, as float32 on the CPU. # (B, P)

    ``readings``: every sample's :func:`read_instructions` (as there), or ``None``."""
    _checked(instructions, len(samples), readings)
    modes = model.training, branch.training
    model.eval()
    branch.eval()
    out: list[Tensor] = []
    try:
        for start in range(0, len(samples), batch_size):
            stop = start + batch_size
            out.append(
                instructed_vectors(
                    model, projector, branch, samples[start:stop], instructions[start:stop],
                    root, image_pool=image_pool, slice_text_by=slice_text_by,
                    readings=None if readings is None else readings[start:stop],
                ).float().cpu()
            )  # fmt: skip
    finally:
        model.train(modes[0])
        branch.train(modes[1])
    return torch.cat(out) if out else torch.zeros(0, projector.dim)
