"""Does the model use its images? The image-grounding diagnostic (issue 17).

A model can caption, answer VQA and POPE probes from its language prior alone; its scores then
look plausible while the image is ignored. Two measurements tell:

- **caption NLL gap**: each caption's negative log-likelihood (nats, summed over its tokens and
  ``<eos>``) given a *shuffled* image minus given its own image. Near 0: the image changes
  nothing. Reported as the mean gap per caption and the share of captions whose gap is positive.
  The shuffle is a fixed derangement of the *distinct* image paths (first-seen order,
  :func:`image_gallery`), mapped to every caption of an image, so that a caption never gets an
  image with its own path, even when a path has several captions (COCO: 5 per image). Where
  every path is distinct, this is a derangement of the captions themselves.
- **image cosine**: the mean cosine similarity between the visual tokens of *different* images
  (distinct paths) after the backbone's projector (the vectors the decoder reads). Near 1: every
  image looks the same to the decoder (measured before issue 17: 0.994 after the projector, 0.53
  in the raw features).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from sugar.data.jsonl import resolve_image
from sugar.data.schema import Sample, Segment
from sugar.models.base import MLLM

__all__ = ["caption_pairs", "grounding", "image_gallery"]


def caption_pairs(samples: Sequence[Sample]) -> list[tuple[str, str]]:
    """(image, caption) of every ``[image, text]`` sample."""
    return [
        (s.segments[0].image, s.segments[1].text)
        for s in samples
        if len(s.segments) == 2 and s.segments[0].image and s.segments[1].text
    ]


def image_gallery(images: Sequence[str]) -> tuple[list[str], list[int]]:
    """The distinct paths of ``images`` in first-seen order, and the index of each item of
    ``images`` among them: the gallery of caption retrieval and of the grounding shuffle, where
    one image may have several captions (COCO and Flickr30k: 5).

    >>> image_gallery(["a.png", "b.png", "a.png"])
    (['a.png', 'b.png'], [0, 1, 0])
    """
    index: dict[str, int] = {}
    owner = [index.setdefault(image, len(index)) for image in images]
    return list(index), owner


def _derangement(count: int, seed: int) -> list[int]:
    """A fixed permutation with no fixed point (count >= 2)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    position = {item: k for k, item in enumerate(order)}
    return [order[(position[i] + 1) % count] for i in range(count)]  # each to its successor


def _nll(
    model: MLLM, pairs: Sequence[tuple[str, str]], root: str | Path, batch: int
) -> torch.Tensor:
    samples = [
        Sample(f"grounding-{i}", [Segment.image_(image), Segment.text_(text, "target")])
        for i, (image, text) in enumerate(pairs)
    ]
    return -torch.cat(
        [model.score(samples[i : i + batch], root) for i in range(0, len(samples), batch)]
    )


@torch.no_grad()
def grounding(
    model: MLLM, samples: Sequence[Sample], root: str | Path, batch_size: int = 32, seed: int = 0
) -> dict[str, float | str]:
    """``nll_right``, ``nll_shuffled`` (mean nats per caption), ``nll_gap`` (their difference),
    ``gap_positive`` (share of captions with a positive gap), ``image_cosine`` (mean cosine of
    the visual tokens of different images; "n/a" for a backbone that does not expose them)
    over the caption pairs of ``samples``.

    The shuffled image of a caption is the image its own image goes to under
    ``_derangement(distinct images, seed)`` (module docstring), never one with its own path;
    ``image_cosine`` is over the distinct images. Raises ``ValueError`` for fewer than 2
    distinct images (no shuffle exists)."""
    pairs = caption_pairs(samples)
    gallery, owner = image_gallery([image for image, _ in pairs])
    if len(gallery) < 2:
        raise ValueError(
            f"grounding needs at least 2 [image, caption] samples with different images, got "
            f"{len(pairs)} samples of {len(gallery)} distinct images"
        )
    was_training = model.training
    model.eval()
    try:
        right = _nll(model, pairs, root, batch_size)
        moved = _derangement(len(gallery), seed)  # distinct image u -> gallery[moved[u]]
        shuffled = _nll(
            model,
            [(gallery[moved[u]], text) for u, (_, text) in zip(owner, pairs, strict=True)],
            root,
            batch_size,
        )
        out: dict[str, float | str] = {
            "nll_right": float(right.mean()),
            "nll_shuffled": float(shuffled.mean()),
            "nll_gap": float((shuffled - right).mean()),
            "gap_positive": float((shuffled > right).float().mean()),
        }
        tokens = model.image_tokens_of([str(resolve_image(root, image)) for image in gallery])
        if tokens is None:
            out["image_cosine"] = "n/a"
        else:
            unit = F.normalize(tokens.flatten(1).float(), dim=1)  # (N, K*D), N distinct images
            cosine = unit @ unit.T
            off = ~torch.eye(len(gallery), dtype=torch.bool)
            out["image_cosine"] = float(cosine[off].mean())
    finally:
        model.train(was_training)
    return out
