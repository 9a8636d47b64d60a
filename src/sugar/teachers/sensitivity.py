"""How much a teacher sees: held-out retrieval and pairwise accuracy per hard-negative kind.

Shapes: N caption samples (one image, one caption each), K negatives of one kind.

METHOD.md section 4 asks for each teacher's sensitivity to each hard-negative kind before the
Triple-Kernel ablation is read. For the caption samples of a JSONL whose ``meta.negatives``
list ``{"kind", "caption"}`` edits (the world's ``caption/<split>.jsonl``, or user data in the
same form), :func:`sensitivity_report` gives per kind:

- ``cross_accuracy``: pairwise accuracy (:func:`sugar.eval.metrics.pairwise_accuracy`) of
  image -> text through the cross-modal vectors: positive score ``cos(c(image), c(caption))``,
  negative score ``cos(c(image), c(negative))``. What the Triple Kernel's image-text distances
  see. 0.5 is chance; ties count as failures.
- ``text_uni_cosine``: mean ``cos(u(caption), u(negative))`` in the uni-modal text space (1.0:
  blind to the edit; MiniLM measured 0.987 on a relation swap). What the Triple Kernel's
  text-text distances see.
- ``cross_text_cosine``: the same in the cross-modal space (text tower).
- ``count``: number of (caption, negative) pairs of that kind.

There is no uni-modal *accuracy*: the uni-modal text space has no image to anchor a positive
against a negative (a caption is always closest to itself), so its column is a distance.

:class:`TeacherEvalModel` is the teacher as a row of the evaluation table (issue 10's
"teacher alone"): a sample's vector is the L2-normalised mean of its slices' cross-modal vectors
(one image or one caption: that slice's vector; a story: the mean over its slices); it has no
language model, so likelihood scoring and generation are "n/a".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from sugar.data.jsonl import load_image
from sugar.data.schema import Sample
from sugar.eval.metrics import pairwise_accuracy, recall_at_k
from sugar.models.feature_cache import FeatureCache
from sugar.teachers import (
    OfflineTeacher,
    Teacher,
    embed_slices,
    sample_slice_contents,
    teacher_cache,
)

__all__ = [
    "TeacherEvalModel",
    "caption_pairs",
    "retrieval_recall",
    "sensitivity_report",
    "sensitivity_table",
]


def caption_pairs(samples: Sequence[Sample]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(image path, caption, negatives) of samples with one image and text (caption files)."""
    out = []
    for sample in samples:
        text = " ".join(s.text for s in sample.segments if s.text is not None)
        if not sample.images or not text:
            raise ValueError(f"sample {sample.id!r} needs an image and a text")
        out.append((sample.images[0], text, list(sample.meta.get("negatives", []))))
    return out


def retrieval_recall(
    teacher: Teacher,
    samples: Sequence[Sample],
    root: str | Path,
    ks: Sequence[int] = (1, 5),
    cache: FeatureCache | None = None,
) -> dict[str, float]:
    """Image -> text Recall@k through cross-modal vectors, all N captions as candidates.

    Each distinct image (:func:`~sugar.eval.grounding.image_gallery`) queries once, any of its
    captions relevant: the COCO / Flickr30k protocol of ``sugar eval``, and one query per
    caption pair where every image is distinct. Returns ``{"R@1": ..., "R@5": ...,
    "candidates": N}``.
    """
    from sugar.eval.grounding import image_gallery

    pairs = caption_pairs(samples)
    gallery, owner = image_gallery([p for p, _, _ in pairs])
    images = embed_slices(teacher, [load_image(root, p) for p in gallery], cache=cache)
    texts = embed_slices(teacher, [t for _, t, _ in pairs], cache=cache)
    scores = (images.cross @ texts.cross.T).numpy()  # (I, N), I distinct images
    relevant = np.arange(len(gallery))[:, None] == np.asarray(owner)[None, :]  # (I, N)
    out: dict[str, float] = {f"R@{k}": recall_at_k(scores, relevant, k) for k in ks}
    out["candidates"] = float(len(pairs))
    return out


def sensitivity_report(
    teacher: Teacher,
    samples: Sequence[Sample],
    root: str | Path,
    cache: FeatureCache | None = None,
) -> dict[str, dict[str, float]]:
    """Per hard-negative kind: the columns of the module doc. Kinds in order of appearance."""
    pairs = caption_pairs(samples)
    images = embed_slices(teacher, [load_image(root, p) for p, _, _ in pairs], cache=cache)
    captions = embed_slices(teacher, [t for _, t, _ in pairs], cache=cache)
    rows: dict[str, list[tuple[int, str]]] = {}
    for i, (_, _, negatives) in enumerate(pairs):
        for negative in negatives:
            rows.setdefault(negative["kind"], []).append((i, negative["caption"]))
    report: dict[str, dict[str, float]] = {}
    for kind, items in rows.items():
        index = torch.tensor([i for i, _ in items])
        negs = embed_slices(teacher, [text for _, text in items], cache=cache)
        image_cross = images.cross[index]  # (K, Dc)
        caption_cross, caption_uni = captions.cross[index], captions.text[index]
        pos = (image_cross * caption_cross).sum(-1)  # (K,)
        neg = (image_cross * negs.cross).sum(-1)  # (K,)
        report[kind] = {
            "cross_accuracy": pairwise_accuracy(pos.numpy(), neg.numpy()),
            "text_uni_cosine": float((caption_uni * negs.text).sum(-1).mean()),
            "cross_text_cosine": float((caption_cross * negs.cross).sum(-1).mean()),
            "count": float(len(items)),
        }
    return report


class TeacherEvalModel:
    """A teacher as an evaluation model: embeddings only (module doc). A teacher is no bundle
    (no backbone, no projector), so it cannot share :class:`sugar.eval.tasks.EvalModel`.

    Satisfies :class:`sugar.eval.tasks.Evaluable`: ``score`` and ``generate`` return ``None``,
    which the tasks report as "n/a".
    """

    generates = False

    def __init__(
        self, teacher: Teacher, cache: FeatureCache | None = None, name: str = "teacher"
    ) -> None:
        self.teacher = teacher
        self.cache = cache
        self.name = name

    @classmethod
    def offline(cls, head_dir: str | Path, cache_dir: str | Path) -> TeacherEvalModel:
        """The offline teacher whose trained head is in ``head_dir`` (``sugar train-teacher``),
        its features cached under ``cache_dir`` (the directory the head was trained with)."""
        teacher = OfflineTeacher.from_dir(head_dir, cache_dir)
        return cls(teacher, teacher_cache(cache_dir, teacher))

    def embed(self, samples: Sequence[Sample], root: str | Path) -> Tensor:
        """(N, Dc) unit vectors: the mean of each sample's slice cross-modal vectors."""
        contents = [sample_slice_contents(sample, root) for sample in samples]
        flat = embed_slices(self.teacher, [c for cs in contents for c in cs], cache=self.cache)
        lengths = torch.tensor([len(cs) for cs in contents])
        owner = torch.repeat_interleave(torch.arange(len(samples)), lengths)  # (slices,)
        sums = torch.zeros(len(samples), self.teacher.cross_dim).index_add_(0, owner, flat.cross)
        return functional.normalize(sums, dim=-1)

    def score(self, samples: Sequence[Sample], root: str | Path) -> None:
        """No language model: no likelihood."""
        return None

    def generate(self, samples: Sequence[Sample], root: str | Path, tokens: int = 8) -> None:
        """No language model: no generation."""
        return None


def sensitivity_table(kinds: dict[str, dict[str, float]], counts: bool) -> list[str]:
    """Printable lines of a sensitivity report's per-kind rows: ``sugar teachers report``
    (``counts``: with each kind's number of pairs) and ``sugar targets inspect`` (without)."""
    width, last = (16, 15) if counts else (18, 16)
    names = ("cross_acc", "text_uni_cos", "cross_txt_cos")
    if not counts:
        names = ("cross acc", "text uni cos", "cross text cos")
    header = f"{'kind':<{width}}{names[0]:>10}{names[1]:>14}{names[2]:>{last}}"
    lines = [header + (f"{'n':>6}" if counts else "")]
    for kind, row in kinds.items():
        line = (
            f"{kind:<{width}}{row['cross_accuracy']:>10.3f}{row['text_uni_cosine']:>14.4f}"
            f"{row['cross_text_cosine']:>{last}.4f}"
        )
        lines.append(line + (f"{int(row['count']):>6}" if counts else ""))
    return lines
