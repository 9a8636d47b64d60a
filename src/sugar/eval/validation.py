"""Validation during training: the objective's losses on validation samples, caption retrieval
R@1 through the projector being trained, and the greedy answers' accuracy on validation VQA and
POPE samples (what ``train.select_metric`` reads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from sugar.data.schema import Sample
from sugar.data.views import caption_view, is_caption_pair
from sugar.embed import embed_vectors
from sugar.eval.grounding import grounding, image_gallery
from sugar.eval.metrics import pope_metrics, recall_at_k, vqa_item_scores
from sugar.models.base import MLLM
from sugar.train.objective import SugarObjective
from sugar.train.run import seeded

__all__ = ["ANSWER_TASKS", "answer_accuracy", "caption_retrieval_r1", "evaluate"]

ANSWER_TASKS = ("vqa", "pope")
"""Tasks whose validation samples (with meta ``answer``) :func:`answer_accuracy` scores."""


@torch.no_grad()
def evaluate(
    model: MLLM,
    objective: SugarObjective,
    samples: Sequence[Sample],
    root: str | Path,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """Validation losses (same objective, fixed prefixes), the image-grounding diagnostic
    (:mod:`sugar.eval.grounding`, when L_g trains), ``val_answer_accuracy`` (when L_g trains
    and the validation samples hold VQA or POPE samples: :func:`answer_accuracy`) and, when a
    projector is trained, caption retrieval text->image R@1 among the validation caption
    pairs (:func:`caption_retrieval_r1`). Grounding and R@1 need caption pairs of at least 2
    distinct images; with fewer, their metrics are left out."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    batches = 0
    for index, start in enumerate(range(0, len(samples), batch_size)):
        chunk = samples[start : start + batch_size]
        parts = objective(model, chunk, root, seeded(seed, 10**6, index))
        for name, value in parts.items():
            if name != "lm_tokens":
                totals[name] = totals.get(name, 0.0) + float(value.detach())
        batches += 1
    metrics = {f"val_{name}": value / max(1, batches) for name, value in totals.items()}
    pairs = [s for s in samples if is_caption_pair(s)]
    distinct = len({s.segments[0].image for s in pairs})  # images of the caption pairs
    if objective.weights.lm > 0 and distinct >= 2:  # does the model use its images?
        for name, value in grounding(model, pairs, root, batch_size, seed).items():
            if isinstance(value, float):
                metrics[f"val_grounding_{name}"] = value
    answerable = [s for s in samples if s.task in ANSWER_TASKS and "answer" in s.meta]
    if objective.weights.lm > 0 and answerable:  # do its answers read the image?
        metrics["val_answer_accuracy"] = answer_accuracy(model, answerable, root, batch_size)
    if objective.weights.uses_projector and distinct >= 2:
        metrics["val_t2i_r1"] = caption_retrieval_r1(
            model, objective, pairs, root, batch_size=batch_size
        )
    model.train(was_training)
    return metrics


def caption_retrieval_r1(
    model: MLLM,
    objective: SugarObjective,
    pairs: Sequence[Sample],
    root: str | Path,
    batch_size: int,
) -> float:
    """Text -> image R@1 among caption pairs ``[image, caption]``, through the objective's
    projector: each caption alone queries every distinct image alone (distinct paths in
    first-seen order, :func:`~sugar.eval.grounding.image_gallery`), its own image relevant;
    the protocol of ``sugar eval``'s ``caption_retrieval`` ``t2i_r1``. Where every path is
    distinct, image i is caption i's."""
    gallery, owner = image_gallery([_image_path(s) for s in pairs])
    first: dict[str, Sample] = {}  # distinct image -> the first pair that shows it
    for sample in pairs:
        first.setdefault(_image_path(sample), sample)
    views = {
        view: embed_vectors(
            model,
            objective.projector,
            [caption_view(s, view) for s in members],
            root,
            batch_size=batch_size,
            image_pool=objective.options.image_pool,
            slice_text_by=objective.options.slice_text_by,
        )
        for view, members in (("image_only", [first[i] for i in gallery]), ("caption_only", pairs))
    }
    images, texts = views["image_only"], views["caption_only"]
    scores = texts @ images.T  # (captions, distinct images)
    return float(recall_at_k(scores, torch.tensor(owner, dtype=torch.long), 1))


def _image_path(pair: Sample) -> str:
    image = pair.segments[0].image
    assert image is not None, pair.id  # a caption pair (is_caption_pair) starts with its image
    return image


def answer_accuracy(
    model: MLLM, samples: Sequence[Sample], root: str | Path, batch_size: int
) -> float:
    """Share of ``samples`` (``vqa`` / ``pope`` samples with meta ``answer``) whose greedy answer
    (8 new tokens at most) is right, read as ``sugar eval`` reads it: POPE answers by
    :func:`~sugar.eval.metrics.pope_metrics` (the POPE reference yes/no rule), VQA answers by
    :func:`~sugar.eval.metrics.vqa_item_scores` (normalised exact match). One mean over all of
    them (``sugar eval``'s POPE averages its negative settings' balanced sets instead)."""
    if not samples:
        raise ValueError("no VQA or POPE samples to answer")
    answers = [
        answer
        for start in range(0, len(samples), batch_size)
        for answer in model.generate(samples[start : start + batch_size], root, max_new_tokens=8)
    ]
    truths = [str(s.meta["answer"]) for s in samples]
    pope = [i for i, s in enumerate(samples) if s.task == "pope"]
    vqa = [i for i, s in enumerate(samples) if s.task != "pope"]
    right = 0.0
    if pope:
        accuracy = pope_metrics([answers[i] for i in pope], [truths[i] for i in pope])["accuracy"]
        right += len(pope) * accuracy
    if vqa:
        right += float(vqa_item_scores([answers[i] for i in vqa], [truths[i] for i in vqa]).sum())
    return right / len(samples)
