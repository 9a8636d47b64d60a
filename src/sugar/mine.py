"""Hard-negative mining with a trained model: top-ranked non-positives, false negatives filtered.

Shapes: Q queries, C candidate texts, P projector width.

Each sample is a (query, positive) pair: the query is its context segments (for a caption
sample, the image), the positive its target text (the caption). The candidates are the
distinct positive texts of the corpus (or of ``candidates``). For each query:

1. embed the query and every candidate with the same model (:func:`sugar.embed.embed_samples`)
   and rank candidates by cosine score ``s`` (an exact :mod:`sugar.index`, ``depth`` deep);
2. drop the positive itself and any candidate whose text equals it (a duplicate is a positive);
3. drop likely false negatives: candidates with ``s > s_positive - margin`` (a text the model
   scores as high as the truth is more often an unlabelled positive than a hard negative:
   positive-aware mining, Moreira et al. 2024, "NV-Retriever", section 3);
4. keep the ``k`` best that remain.

The output is the input samples with ``meta.negatives`` extended by
``{"kind": "mined", "caption": text, "score": s, "positive_score": s_positive, "source": id}``,
the layout of the world's caption negatives (``{"kind", "caption", ...}``), so every consumer of
caption hard negatives reads mined ones too. Nothing is dropped: a query with fewer than ``k``
survivors gets fewer negatives, and the summary counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sugar.data.schema import Sample, Segment
from sugar.embed import embed_vectors
from sugar.index import build_index
from sugar.models.base import MLLM
from sugar.models.prefix import RetrievalProjector

__all__ = ["MINED_KIND", "mine_hard_negatives", "query_and_positive", "select_negatives"]

MINED_KIND = "mined"
"""The ``kind`` of a mined negative in ``meta.negatives``."""


def query_and_positive(sample: Sample) -> tuple[Sample, str]:
    """A sample's query (its context segments) and positive (its target texts, joined by a
    space). ``ValueError`` naming the sample when either is missing."""
    query = [segment for segment in sample.segments if segment.role == "context"]
    targets = [s.text for s in sample.segments if s.role == "target" and s.text is not None]
    if not query or not targets:
        raise ValueError(
            f"sample {sample.id!r}: mining needs context segments (the query) and a target "
            "text (the positive), e.g. a caption sample [image, caption (target)]"
        )
    return Sample(sample.id, query, sample.task), " ".join(targets)


def select_negatives(
    hits: Sequence[dict[str, Any]],
    positives: set[str],
    positive_score: float,
    k: int,
    margin: float,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Steps 2-4 of the rule (module docstring) on one query's ranked ``hits`` (``{"id",
    "score"}``, best first): skip ``positives``, drop hits scoring above ``positive_score -
    margin`` (likely false negatives), keep the first ``k`` that remain. Returns the kept hits
    and the counts ``positives_skipped`` and ``filtered_false_negatives``.

    >>> hits = [{"id": "a", "score": 0.9}, {"id": "b", "score": 0.79}, {"id": "c", "score": 0.5}]
    >>> kept, counts = select_negatives(hits, {"a"}, 0.8, k=1, margin=0.05)
    >>> [h["id"] for h in kept], counts["filtered_false_negatives"]
    (['c'], 1)
    """
    kept: list[dict[str, Any]] = []
    counts = {"positives_skipped": 0, "filtered_false_negatives": 0}
    for hit in hits:
        if len(kept) == k:
            break
        if hit["id"] in positives:
            counts["positives_skipped"] += 1
        elif hit["score"] > positive_score - margin:
            counts["filtered_false_negatives"] += 1
        else:
            kept.append(hit)
    return kept, counts


def mine_hard_negatives(
    model: MLLM,
    projector: RetrievalProjector,
    samples: Sequence[Sample],
    root: str | Path,
    *,
    candidates: Sequence[Sample] | None = None,
    k: int = 3,
    margin: float = 0.05,
    depth: int = 100,
    keep_existing: bool = True,
    **embed_options: Any,
) -> tuple[list[Sample], dict[str, Any]]:
    """Mine up to ``k`` hard negatives per sample (module docstring for the rule).

    Args:
        samples: (query, positive) samples, e.g. caption samples.
        candidates: samples whose target texts form the candidate pool (default: ``samples``).
        k: negatives kept per query.
        margin: a candidate is kept only if ``score <= positive_score - margin``.
        depth: candidates examined per query, best first (a query whose top ``depth`` are all
            filtered gets fewer than ``k``).
        keep_existing: keep the samples' existing ``meta.negatives`` (earlier mined ones
            are replaced).
        embed_options: for :func:`sugar.embed.embed_samples` (``batch_size``, ``image_pool``,
            ``slice_text_by``, ``progress``).

    Returns:
        The samples with mined negatives, and a summary: ``queries``, ``candidates``,
        ``mined``, ``filtered_false_negatives`` (dropped by the margin),
        ``positives_skipped`` (the positive's own text met among the candidates) and
        ``short`` (queries that got fewer than ``k``).
    """
    if k < 1 or depth < 1:
        raise ValueError(f"k={k}, depth={depth}: both must be >= 1")
    if margin < 0:
        raise ValueError(f"margin={margin}: must be >= 0")
    pairs = [query_and_positive(sample) for sample in samples]
    pool = candidates if candidates is not None else samples
    texts: dict[str, str] = {}  # candidate text -> the first sample id it comes from
    for sample in pool:
        texts.setdefault(query_and_positive(sample)[1], sample.id)
    options = dict(embed_options)
    text_samples = [Sample(f"candidate-{i}", [Segment.text_(t)]) for i, t in enumerate(texts)]
    candidate_vectors = embed_vectors(model, projector, text_samples, ".", **options)  # (C, P)
    positive_samples = [
        Sample(f"positive-{i}", [Segment.text_(p)]) for i, (_, p) in enumerate(pairs)
    ]
    positive_vectors = embed_vectors(model, projector, positive_samples, ".", **options)  # (Q, P)
    query_vectors = embed_vectors(model, projector, [query for query, _ in pairs], root, **options)
    positive_scores = (query_vectors * positive_vectors).sum(dim=1)  # (Q,)

    index = build_index("exact", candidate_vectors.shape[1], "mining")
    index.add(list(texts), candidate_vectors)
    hits = index.search(query_vectors, min(depth, len(texts)) if texts else 1)
    summary = {"queries": len(pairs), "candidates": len(texts), "mined": 0,
               "filtered_false_negatives": 0, "positives_skipped": 0, "short": 0}  # fmt: skip
    out = []
    for sample, (_, positive), row, positive_score in zip(
        samples, pairs, hits, positive_scores.tolist(), strict=True
    ):
        kept, counts = select_negatives(row, {positive}, positive_score, k, margin)
        summary["positives_skipped"] += counts["positives_skipped"]
        summary["filtered_false_negatives"] += counts["filtered_false_negatives"]
        mined = [
            {
                "kind": MINED_KIND,
                "caption": hit["id"],
                "score": round(hit["score"], 6),
                "positive_score": round(positive_score, 6),
                "source": texts[hit["id"]],
            }
            for hit in kept
        ]
        summary["mined"] += len(mined)
        summary["short"] += len(mined) < k
        existing = list(sample.meta.get("negatives", [])) if keep_existing else []
        # re-mining replaces earlier mined negatives instead of piling duplicates up
        existing = [n for n in existing if n.get("kind") != MINED_KIND]
        meta = {**sample.meta, "negatives": existing + mined}
        out.append(Sample(sample.id, list(sample.segments), sample.task, meta))
    return out, summary
