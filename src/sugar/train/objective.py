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
from typing import Any

import torch
from torch import Tensor, nn

from sugar.align import TypeMedians
from sugar.data.schema import Sample, Segment
from sugar.data.slices import slices
from sugar.data.views import group_of
from sugar.losses.contrastive import contrastive_loss_without_false_negatives, same_image_mask
from sugar.losses.generative import LmReduction, generative_loss
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
from sugar.train.distributed import Shard, all_reduce_sum, equal_pass_counts, gather_with_grad
from sugar.train.retrieval import pair_roles
from sugar.train.states import _CHUNK, ChunkedStates, PrefixPlan, _length_chunks

__all__ = [
    "ChunkedStates",
    "Content",
    "PrefixPlan",
    "SugarObjective",
    "group_indices",
    "sample_content",
]


def _replicated(parameter: Tensor, shard: Shard | None) -> Tensor:
    """A parameter used *after* the gather: every rank computes the same global loss from it,
    so only rank 0 lets its gradient through (summed over ranks it is then counted once)."""
    if shard is None or not shard.active or shard.rank == 0:
        return parameter
    return parameter.detach()


Content = tuple[tuple[str, str], ...]
"""What a sample shows: (kind, image path or text) per segment (:func:`sample_content`)."""


def sample_content(sample: Sample) -> Content:
    """What ``sample`` shows: each segment's kind and image path or text, roles ignored. Two
    retrieval documents with equal content are one document (for a caption pair's ``[image]``
    document: the same image path)."""
    return tuple((s.kind, s.image if s.image is not None else str(s.text)) for s in sample.segments)


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
    (global) batch as negatives, ``r`` of each view's final prefix as its embedding. Pairs whose
    documents are the same (:func:`sample_content`: two captions of one image path) are not
    negatives of each other, and a pair repeated exactly (same document, same query) counts
    once (:meth:`contrastive_from`).
    ``lm_reduction``: L_g's mean over supervised tokens or over samples
    (:func:`~sugar.losses.generative.generative_loss`).
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
        lm_reduction: LmReduction = "token",
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
        self.lm_reduction: LmReduction = lm_reduction
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
        if retrieval is None and self.weights.uses_projector:  # one pass serves every loss
            batch = model.collate(samples[lo:hi], root, slice_text_by=self.options.slice_text_by)
            output = model(batch)
            labels = batch.labels.to(output.logits.device)
            generated = generative_loss(output.logits, labels, self.lm_reduction)
            parts, lm_loss = self._global_lm_loss(generated, shard)
            states = ChunkedStates.single(output.hidden, batch.spans)
            embedded: Sequence[Sample] = samples
        else:  # L_g alone, in length-sorted chunks (a long needle pads only its own chunk)
            parts, lm_loss = self.generative_parts(model, samples, root, shard)
            embedded = retrieval or []
            if retrieval is not None and self.weights.uses_projector:
                lo, hi = shard.bounds(len(retrieval))
                states = self.encode_chunks(model, retrieval[lo:hi], root, shard)
        if self.weights.uses_projector and embedded:
            plan = self.prefix_plan(embedded, generator, shard)
            r_prefixes, r_finals = self.embed_plan(states, plan)
            parts.update(self.retrieval_parts(model, r_prefixes, r_finals, plan, embedded, root))
        # The tensor to backward: this rank's share of L_g plus the global L_d and L_c (whose
        # gradients reach this rank's rows only); its value is the global total, what is logged.
        total = self.weights.total({**parts, "lm_loss": lm_loss})
        if shard.active:
            total = self.weights.total(parts).detach() + (total - total.detach())
        parts["loss"] = total
        return parts

    def _global_lm_loss(
        self, generated: dict[str, Tensor], shard: Shard
    ) -> tuple[dict[str, Tensor], Tensor]:
        """({"lm_loss": the global L_g, to log}, this rank's share of it, to backward)."""
        local_units = generated["lm_units"]
        global_units = all_reduce_sum(local_units, shard)
        lm_loss = generated["lm_loss"] * local_units / global_units.clamp_min(1)
        return {"lm_loss": all_reduce_sum(lm_loss, shard) if shard.active else lm_loss}, lm_loss

    def generative_parts(
        self, model: MLLM, samples: Sequence[Sample], root: str | Path, shard: Shard
    ) -> tuple[dict[str, Tensor], Tensor]:
        """L_g of the global micro-batch ``samples`` from this rank's share, in length-sorted
        chunks: ({"lm_loss": global}, this rank's share of it)."""
        lo, hi = shard.bounds(len(samples))
        generated = self._chunked_generative_loss(model, samples[lo:hi], root, shard)
        return self._global_lm_loss(generated, shard)

    def _chunked_generative_loss(
        self, model: MLLM, samples: Sequence[Sample], root: str | Path, shard: Shard
    ) -> dict[str, Tensor]:
        """L_g of ``samples`` (the mean over all their supervised tokens or samples:
        ``lm_reduction``), computed in chunks of samples of similar length
        (:func:`_length_chunks`; as many on every rank under FSDP2,
        :func:`~sugar.train.distributed.equal_pass_counts`)."""
        summed: Tensor | int = 0
        units: Tensor | int = 0
        chunks = _length_chunks(range(len(samples)), samples, _CHUNK)
        for rows in equal_pass_counts(chunks, shard):
            part = [samples[i] for i in rows]
            batch = model.collate(part, root, slice_text_by=self.options.slice_text_by)
            output = model(batch)
            labels = batch.labels.to(output.logits.device)
            piece = generative_loss(output.logits, labels, self.lm_reduction)
            summed = summed + piece["lm_loss"] * piece["lm_units"]
            units = units + piece["lm_units"]
        assert isinstance(summed, Tensor) and isinstance(units, Tensor)
        return {"lm_loss": summed / units.clamp_min(1), "lm_units": units}

    def encode_chunks(
        self, model: MLLM, samples: Sequence[Sample], root: str | Path, shard: Shard | None = None
    ) -> ChunkedStates:
        """Hidden states of the retrieval samples in length-sorted chunks
        (:func:`_length_chunks`): a pair's document is often one image (two tokens) and its
        query a caption or a story, so one padded batch would spend most of its work on
        padding (measured: 64 caption pairs 4.7 s padded together, 2.4 s in chunks;
        ``benchmarks/bench_minilm.py``). Under FSDP2 every rank runs as many chunks
        (:func:`~sugar.train.distributed.equal_pass_counts`)."""
        chunks = []
        parts = _length_chunks(range(len(samples)), samples, _CHUNK)
        for part in equal_pass_counts(parts, shard):
            batch = model.collate(
                [samples[i] for i in part], root, slice_text_by=self.options.slice_text_by
            )
            chunks.append((part, model(batch).hidden, batch.spans))
        return ChunkedStates(len(samples), chunks)

    def prefix_plan(
        self, samples: Sequence[Sample], generator: torch.Generator | None, shard: Shard
    ) -> PrefixPlan:
        """Which ``r`` the retrieval losses need of the global batch ``samples`` (module doc of
        :class:`PrefixPlan`); L_d's prefix picks draw from ``generator`` when alpha > 0."""
        counts = [len(slices(sample, by=self.options.slice_text_by)) for sample in samples]
        lo, hi = shard.bounds(len(samples))
        if self.weights.alpha > 0:
            sample_index, slice_index, keep = sample_prefixes(
                counts, self.options.prefixes_per_sample, generator
            )
        else:
            sample_index = slice_index = torch.zeros(0, dtype=torch.long)
            keep = torch.zeros(0, dtype=torch.bool)
        return PrefixPlan(counts, sample_index, slice_index, keep, shard, lo, hi)

    def embed_plan(
        self, states: ChunkedStates, plan: PrefixPlan, rows: Sequence[int] | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """(``r`` of this rank's L_d prefixes (n_local, P), ``r`` of its samples' final prefixes
        (B_local, P)) from ``states`` (None for a loss that is off). ``rows``: only the prefixes
        of these local samples (a GradCache chunk), in plan order."""
        local_counts = plan.counts[plan.lo : plan.hi]
        if rows is None and local_counts != [len(s) for s in states.spans]:
            raise ValueError(f"slice counts {local_counts} differ from the model's spans")
        r_prefixes = r_finals = None
        if self.weights.alpha > 0:
            b, e = plan.local_prefixes(rows)
            r_prefixes = states.embed(b, e, self.projector, self.options.image_pool)
        if self.weights.contrastive > 0:
            b = torch.tensor(range(len(local_counts)) if rows is None else rows, dtype=torch.long)
            e = torch.tensor([local_counts[i] - 1 for i in b.tolist()], dtype=torch.long)
            r_finals = states.embed(b, e, self.projector, self.options.image_pool)
        return r_prefixes, r_finals

    def retrieval_parts(
        self,
        model: MLLM,
        r_prefixes: Tensor | None,
        r_finals: Tensor | None,
        plan: PrefixPlan,
        samples: Sequence[Sample],
        root: str | Path,
    ) -> dict[str, Tensor]:
        """InfoNCE (from ``r_finals``) and L_d (from ``r_prefixes``) of the global batch
        ``samples``, from this rank's vectors (:meth:`embed_plan`); every rank computes the
        same values. ``contrastive_pairs``: how many pairs InfoNCE saw (below 2 it could not
        run)."""
        parts: dict[str, Tensor] = {}
        if r_finals is not None:
            contrastive = self.contrastive_from(model, r_finals, samples, root, plan.shard)
            parts["contrastive_pairs"] = contrastive.pop("pairs").float()
            parts.update(contrastive)
        if r_prefixes is not None:
            parts.update(self.structure_from(r_prefixes, plan, samples, root))
        return parts

    def contrastive_from(
        self, model: MLLM, r_local: Tensor, samples: Sequence[Sample], root: str | Path,
        shard: Shard,
    ) -> dict[str, Tensor]:  # fmt: skip
        """InfoNCE over the batch's query/document pairs
        (:func:`~sugar.train.retrieval.pair_roles`) from this rank's final-prefix vectors
        ``r_local`` (B_local, P); only ``pairs`` when fewer than two.

        Caption sets name one image in several pairs (COCO: five captions each). A pair whose
        document equals another's (:func:`sample_content`) is left out of that pair's denominators
        in both directions (:func:`~sugar.losses.contrastive.same_image_mask`,
        :func:`~sugar.losses.contrastive.contrastive_loss_without_false_negatives`); a pair
        whose document *and* query both equal an earlier pair's is dropped, so it is not a
        positive twice. ``pairs`` counts the pairs kept. With every document distinct (the
        built-in world) this is :func:`~sugar.losses.clip_contrastive_loss` exactly."""
        r = gather_with_grad(r_local, shard)  # (B, P): every sample's final prefix, global order
        kept: dict[tuple[Content, Content], tuple[int, int]] = {}
        for query, document in pair_roles(samples):
            key = (sample_content(samples[document]), sample_content(samples[query]))
            kept.setdefault(key, (document, query))
        pairs = list(kept.values())
        if len(pairs) < 2:
            return {"pairs": torch.tensor(len(pairs))}
        image_rows = torch.tensor([i for i, _ in pairs], device=r.device)
        text_rows = torch.tensor([t for _, t in pairs], device=r.device)
        scale = _replicated(self.logit_scale, shard)
        negatives = self._hard_negatives(model, [samples[t] for _, t in pairs], root, shard)
        same_image = same_image_mask([sample_content(samples[i]) for i, _ in pairs])  # (N, N)
        return {
            **contrastive_loss_without_false_negatives(
                r[image_rows], r[text_rows], scale, same_image, negatives
            ),
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

    def structure_from(
        self, r_local: Tensor, plan: PrefixPlan, samples: Sequence[Sample], root: str | Path
    ) -> dict[str, Tensor]:
        """L_d of the global batch ``samples`` from this rank's prefix vectors ``r_local``
        (n_local, P, in plan order)."""
        options, shard = self.options, plan.shard
        r = gather_with_grad(r_local, shard)  # (n, P), global order
        teacher_slices = self.teacher(samples, root)
        if teacher_slices.lengths.tolist() != plan.counts:
            raise ValueError(
                "teacher slices and model slices differ in number per sample: "
                f"{teacher_slices.lengths.tolist()} vs {plan.counts}"
            )
        assert self.delta is not None
        target = structure_targets(
            teacher_slices, plan.sample_index, plan.slice_index, sigma=self.delta,
            options=options, medians=self.medians, groups=group_indices(samples),
        ).to(r.device)  # fmt: skip
        predicted = predicted_matrix(r, options.predicted_kernel, self.predicted_sigma(shard))
        keep = plan.keep.to(r.device)
        parts = structure_loss(predicted, target, keep, options.structure_reduction)
        mask = keep[:, None] & keep[None, :]
        parts["target_mean"] = target[mask].mean()
        parts["predicted_mean"] = predicted.detach()[mask].mean()
        return parts
