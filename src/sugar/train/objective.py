"""The training objective L = L_g + alpha * L_d on one micro-batch (METHOD.md sections 1-5).

Shapes: B samples, T tokens, D hidden width, n = B * prefixes_per_sample prefixes.

One forward pass per micro-batch serves both losses: L_g on the target spans the samples have,
L_d on prefixes of every sample (:mod:`sugar.losses.structure`). Which samples a batch holds is
the data side's job (:mod:`sugar.data.views`: captions in both orders, images and captions
alone, stories). Under gradient accumulation L_d is computed per micro-batch: its n, its
target matrix and its same-sample pairs are those of the micro-batch (the paper's batch of 16
per GPU is also a per-device batch).

:class:`SugarObjective` owns the trainable modules the objective adds (the retrieval projector
and, for ``predicted_kernel="learned"``, a log-bandwidth); the loop puts them in the optimiser
and the checkpoint, and the bundle keeps the projector for ``sugar.embed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from sugar.align import TypeMedians
from sugar.data.collate import Span
from sugar.data.schema import Sample, Segment
from sugar.data.slices import slices
from sugar.data.views import group_of
from sugar.losses.contrastive import clip_contrastive_loss
from sugar.losses.generative import generative_loss
from sugar.losses.structure import (
    StructureOptions,
    predicted_matrix,
    sample_prefixes,
    structure_loss,
    structure_targets,
)
from sugar.losses.weights import LossWeights
from sugar.models.base import MLLM
from sugar.models.prefix import RetrievalProjector, embed_prefixes
from sugar.train.distributed import Shard, all_reduce_sum, gather_with_grad
from sugar.train.retrieval import pair_roles

__all__ = ["ChunkedStates", "SugarObjective", "group_indices"]


_CHUNK = 32
"""The most samples in one forward pass."""
_PASS_COST = 64
"""What one more forward pass costs, in characters of padded input (:func:`_length_chunks`)."""


def _size(sample: Sample) -> int:
    """A sample's length in characters, images counted as 16 (for sorting only)."""
    return sum(len(seg.text) if seg.text is not None else 16 for seg in sample.segments)


def _length_chunks(rows: Sequence[int], samples: Sequence[Sample], size: int) -> list[list[int]]:
    """``rows`` sorted by their samples' length and cut into chunks of at most ``size`` that
    minimise the padded input (each chunk pads to its longest sample) plus ``_PASS_COST`` per
    chunk: an exact partition of the sorted rows by dynamic programming.

    Measured (issue 17): the demo's generative batch of 16 mixes needles of about 150 tokens
    with captions of 15; padded as one batch it held 3,200 token slots for about 1,000 tokens.

    >>> from sugar.data.schema import Segment
    >>> texts = ["a" * 10, "b" * 10, "c" * 400, "d" * 12]
    >>> batch = [Sample(str(i), [Segment.text_(t)]) for i, t in enumerate(texts)]
    >>> _length_chunks(range(4), batch, 8)
    [[0, 1, 3], [2]]
    """
    ordered = sorted(rows, key=lambda i: _size(samples[i]))
    sizes = [_size(samples[i]) for i in ordered]
    best = [0.0] + [float("inf")] * len(ordered)  # best[j]: cost of the first j rows
    cut = [0] * (len(ordered) + 1)
    for end in range(1, len(ordered) + 1):
        for start in range(max(0, end - size), end):
            cost = best[start] + (end - start) * sizes[end - 1] + _PASS_COST
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks, end = [], len(ordered)
    while end > 0:
        chunks.append(ordered[cut[end] : end])
        end = cut[end]
    return chunks[::-1]


class ChunkedStates:
    """Last-layer hidden states of B samples encoded in one or more forward passes: each chunk
    is (its rows among the B samples, hidden (B_c, T_c, D), spans)."""

    def __init__(
        self, count: int, chunks: Sequence[tuple[list[int], Tensor, Sequence[Sequence[Span]]]]
    ) -> None:
        self.chunks = list(chunks)
        self.where: list[tuple[int, int]] = [(-1, -1)] * count  # row -> (chunk, row in chunk)
        self.spans: list[Sequence[Span]] = [[] for _ in range(count)]
        for c, (rows, _, spans) in enumerate(self.chunks):
            for local, row in enumerate(rows):
                self.where[row] = (c, local)
                self.spans[row] = spans[local]

    @classmethod
    def single(cls, hidden: Tensor, spans: Sequence[Sequence[Span]]) -> ChunkedStates:
        return cls(len(spans), [(list(range(len(spans))), hidden, spans)])

    def embed(
        self,
        sample_index: Tensor,
        slice_index: Tensor,
        projector: RetrievalProjector,
        image_pool: Literal["mean", "last"],
    ) -> Tensor:
        """``r`` of each prefix (sample b, slice e), in the order given. # (n, P)"""
        located = [self.where[b] for b in sample_index.tolist()]  # (chunk, row in chunk) each
        if len(self.chunks) == 1:  # one pass: the prefixes are already in order
            hidden, spans = self.chunks[0][1], self.chunks[0][2]
            local = torch.tensor([row for _, row in located], dtype=torch.long)
            return embed_prefixes(hidden, spans, local, slice_index, projector, image_pool)
        parts, order = [], []
        for c, (_, hidden, spans) in enumerate(self.chunks):
            picked = [i for i, (chunk, _) in enumerate(located) if chunk == c]
            if not picked:
                continue
            local = torch.tensor([located[i][1] for i in picked], dtype=torch.long)
            parts.append(
                embed_prefixes(hidden, spans, local, slice_index[picked], projector, image_pool)
            )
            order += picked
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return torch.cat(parts)[inverse.to(parts[0].device)]


def _replicated(parameter: Tensor, shard: Shard | None) -> Tensor:
    """A parameter used *after* the gather: every rank computes the same global loss from it,
    so only rank 0 lets its gradient through (summed over ranks it is then counted once)."""
    if shard is None or not shard.active or shard.rank == 0:
        return parameter
    return parameter.detach()


def group_indices(samples: Sequence[Sample]) -> Tensor:
    """(B,) index of each sample's group: views of one source share it."""
    first: dict[str, int] = {}
    return torch.tensor([first.setdefault(group_of(s), len(first)) for s in samples])


class SugarObjective(nn.Module):
    """``lm * L_g + alpha * L_d + contrastive * L_c`` (:class:`~sugar.losses.LossWeights`)
    with the L_d switches of :class:`~sugar.losses.structure.StructureOptions`.

    ``alpha = 0`` needs no teacher (no L_d forward). ``teacher`` is required when ``alpha > 0``;
    ``delta`` must be resolved (a number) before construction. The baselines of METHOD.md
    section 7: generative-only (alpha 0), CAFe-style (alpha 0, contrastive > 0),
    contrastive-only (also lm 0). L_c is CLIP's symmetric InfoNCE with a learnable
    temperature over the image and caption of each ``split`` pair in the batch
    (:mod:`sugar.data.views`): image and caption as **separate** inputs, the other pairs of the
    (global) batch as negatives, ``r`` of each view's final prefix as its embedding.
    """

    def __init__(
        self,
        hidden_size: int,
        weights: LossWeights,
        options: StructureOptions,
        *,
        delta: float | None = None,
        teacher: Any = None,
        medians: TypeMedians | None = None,
        hard_negatives: int = 0,
    ) -> None:
        super().__init__()
        if weights.alpha > 0 and (teacher is None or delta is None):
            raise ValueError("alpha > 0 needs a teacher and a resolved delta")
        self.weights = weights
        self.options = options
        self.delta = delta
        self.teacher = teacher
        self.medians = medians
        self.hard_negatives = hard_negatives
        self.projector = RetrievalProjector(hidden_size, options.projector_dim)
        # CLIP's initial temperature 0.07, in log space (clip_contrastive_loss clamps it)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1 / 0.07)), requires_grad=weights.contrastive > 0
        )
        start = math.log(delta) if delta else 0.0
        self.log_bandwidth = nn.Parameter(
            torch.tensor(start), requires_grad=options.predicted_kernel == "learned"
        )

    def predicted_sigma(self, shard: Shard | None = None) -> float | Tensor:
        """The bandwidth of ``Mr``: the target's delta, or the learned one."""
        if self.options.predicted_kernel == "learned":
            return _replicated(self.log_bandwidth, shard).exp()
        return float(self.delta or 1.0)

    def forward(
        self,
        model: MLLM,
        samples: Sequence[Sample],
        root: str | Path,
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
        retrieval: Sequence[Sample] | None = None,
    ) -> dict[str, Tensor]:
        """Named losses of one micro-batch: ``loss`` (what to backward), ``lm_loss`` (global),
        with alpha > 0 ``structure_loss``, ``structure_mse``, ``target_mean``, ``predicted_mean``;
        with InfoNCE ``contrastive_pairs`` (how many pairs it saw; below 2 it could not run).

        ``samples`` is the global micro-batch; with a ``shard`` of several ranks the model runs
        on this rank's share only and the losses are those of the global batch
        (:mod:`sugar.train.distributed`; sum the gradients over ranks after backward).
        ``retrieval``: the step's retrieval micro-batch (:mod:`sugar.train.retrieval`): when
        given, L_d and InfoNCE run on it and L_g on ``samples`` alone; when None, every loss
        shares one forward pass over ``samples``.
        """
        shard = shard or Shard()
        lo, hi = shard.bounds(len(samples))
        slice_text_by = self.options.slice_text_by
        embedded = samples
        if retrieval is None and self.weights.uses_projector:  # one pass serves every loss
            batch = model.collate(samples[lo:hi], root, slice_text_by=slice_text_by)
            output = model(batch)
            parts = generative_loss(output.logits, batch.labels.to(output.logits.device))
            states = ChunkedStates.single(output.hidden, batch.spans)
        else:  # L_g alone, in length-sorted chunks (a long needle pads only its own chunk)
            parts = self._chunked_generative_loss(model, samples[lo:hi], root)
        local_tokens = parts["lm_tokens"]
        global_tokens = all_reduce_sum(local_tokens, shard)
        lm_loss = parts["lm_loss"] * local_tokens / global_tokens.clamp_min(1)
        parts = {"lm_loss": all_reduce_sum(lm_loss, shard) if shard.active else lm_loss}
        if retrieval is not None and self.weights.uses_projector:
            lo, hi = shard.bounds(len(retrieval))
            states = self.encode_chunks(model, retrieval[lo:hi], root)
            embedded = retrieval
        if self.weights.contrastive > 0:
            contrastive = self.contrastive_parts(model, states, embedded, root, shard)
            parts["contrastive_pairs"] = contrastive.pop("pairs").float()
            parts.update(contrastive)
        if self.weights.alpha > 0:
            parts.update(self.structure_parts(states, embedded, root, generator, shard))
        # The tensor to backward: this rank's share of L_g plus the global L_d and L_c (whose
        # gradients reach this rank's rows only); its value is the global total, what is logged.
        total = self.weights.total({**parts, "lm_loss": lm_loss})
        if shard.active:
            total = self.weights.total(parts).detach() + (total - total.detach())
        parts["loss"] = total
        return parts

    def _chunked_generative_loss(
        self, model: MLLM, samples: Sequence[Sample], root: str | Path
    ) -> dict[str, Tensor]:
        """L_g of ``samples`` (the mean over all their supervised tokens), computed in chunks
        of samples of similar length (:func:`_length_chunks`)."""
        summed: Tensor | int = 0
        tokens: Tensor | int = 0
        for rows in _length_chunks(range(len(samples)), samples, _CHUNK):
            part = [samples[i] for i in rows]
            batch = model.collate(part, root, slice_text_by=self.options.slice_text_by)
            output = model(batch)
            piece = generative_loss(output.logits, batch.labels.to(output.logits.device))
            summed = summed + piece["lm_loss"] * piece["lm_tokens"]
            tokens = tokens + piece["lm_tokens"]
        assert isinstance(summed, Tensor) and isinstance(tokens, Tensor)
        return {"lm_loss": summed / tokens.clamp_min(1), "lm_tokens": tokens}

    def encode_chunks(
        self, model: MLLM, samples: Sequence[Sample], root: str | Path
    ) -> ChunkedStates:
        """Hidden states of the retrieval samples in length-sorted chunks
        (:func:`_length_chunks`): a pair's document is often one image (two tokens) and its
        query a caption or a story, so one padded batch would spend most of its work on
        padding (measured: 64 caption pairs 4.7 s padded together, 2.4 s in chunks;
        ``benchmarks/bench_minilm.py``)."""
        chunks = []
        for part in _length_chunks(range(len(samples)), samples, _CHUNK):
            batch = model.collate(
                [samples[i] for i in part], root, slice_text_by=self.options.slice_text_by
            )
            chunks.append((part, model(batch).hidden, batch.spans))
        return ChunkedStates(len(samples), chunks)

    def contrastive_parts(
        self,
        model: MLLM,
        states: ChunkedStates,
        samples: Sequence[Sample],
        root: str | Path,
        shard: Shard,
    ) -> dict[str, Tensor]:
        """InfoNCE over the batch's query/document pairs
        (:func:`~sugar.train.retrieval.pair_roles`); only ``pairs`` when fewer than two."""
        local = torch.arange(len(states.spans))
        last = torch.tensor([len(s) - 1 for s in states.spans])
        r = states.embed(local, last, self.projector, self.options.image_pool)
        r = gather_with_grad(r, shard)  # (B, P): every sample's final prefix, global order
        pairs = [(document, query) for query, document in pair_roles(samples)]
        if len(pairs) < 2:
            return {"pairs": torch.tensor(len(pairs))}
        image_rows = torch.tensor([i for i, _ in pairs], device=r.device)
        text_rows = torch.tensor([t for _, t in pairs], device=r.device)
        scale = _replicated(self.logit_scale, shard)
        negatives = self._hard_negatives(model, [samples[t] for _, t in pairs], root, shard)
        return {
            **clip_contrastive_loss(r[image_rows], r[text_rows], scale, negatives),
            "pairs": torch.tensor(len(pairs)),
        }

    def _hard_negatives(
        self, model: MLLM, captions: Sequence[Sample], root: str | Path, shard: Shard
    ) -> Tensor | None:
        """(N, H, P) embeddings of each pair's first H ``meta.negatives`` captions (the world's
        stated kinds, or ``sugar mine`` output), each a caption-alone sample like the positive;
        a pair with fewer repeats its last one. None when H = 0 or some pair has none."""
        if self.hard_negatives == 0:
            return None
        if shard.active:
            raise ValueError("contrastive.hard_negatives is not supported under data parallelism")
        chosen = []
        for caption in captions:
            texts = [n["caption"] for n in caption.meta.get("negatives", [])][: self.hard_negatives]
            if not texts:
                return None
            chosen += texts + [texts[-1]] * (self.hard_negatives - len(texts))
        batch = model.collate(
            [Sample(f"negative-{i}", [Segment.text_(t)]) for i, t in enumerate(chosen)], root,
            slice_text_by=self.options.slice_text_by,
        )  # fmt: skip
        hidden = model(batch).hidden
        ends = torch.tensor([len(s) - 1 for s in batch.spans])
        r = embed_prefixes(
            hidden, batch.spans, torch.arange(len(chosen)), ends, self.projector,
            self.options.image_pool,
        )  # fmt: skip
        return r.view(len(captions), self.hard_negatives, -1)

    def structure_parts(
        self,
        states: ChunkedStates,
        samples: Sequence[Sample],
        root: str | Path,
        generator: torch.Generator | None,
        shard: Shard | None = None,
    ) -> dict[str, Tensor]:
        """L_d of the global batch ``samples`` from this rank's hidden states and slice spans
        (``states``); every rank computes the same value."""
        shard = shard or Shard()
        lo, hi = shard.bounds(len(samples))
        options = self.options
        counts = [len(slices(sample, by=options.slice_text_by)) for sample in samples]
        if counts[lo:hi] != [len(s) for s in states.spans]:
            raise ValueError(f"slice counts {counts[lo:hi]} differ from the model's spans")
        sample_index, slice_index, keep = sample_prefixes(
            counts, options.prefixes_per_sample, generator
        )
        mine = (sample_index >= lo) & (sample_index < hi)
        r_local = states.embed(
            sample_index[mine] - lo, slice_index[mine], self.projector, options.image_pool
        )
        r = gather_with_grad(r_local, shard)  # (n, P), global order
        teacher_slices = self.teacher(samples, root)
        if teacher_slices.lengths.tolist() != counts:
            raise ValueError(
                "teacher slices and model slices differ in number per sample: "
                f"{teacher_slices.lengths.tolist()} vs {counts}"
            )
        assert self.delta is not None
        target = structure_targets(
            teacher_slices, sample_index, slice_index, sigma=self.delta, options=options,
            medians=self.medians, groups=group_indices(samples),
        ).to(r.device)  # fmt: skip
        predicted = predicted_matrix(r, options.predicted_kernel, self.predicted_sigma(shard))
        keep = keep.to(r.device)
        parts = structure_loss(predicted, target, keep, options.structure_reduction)
        mask = keep[:, None] & keep[None, :]
        parts["target_mean"] = target[mask].mean()
        parts["predicted_mean"] = predicted.detach()[mask].mean()
        return parts
