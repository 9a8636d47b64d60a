"""Hard negatives per instruction, mined with a control branch (round r+1 of training).

Shapes: Q queries, C corpus candidates, P projector width.

Each query is embedded *with its instruction* by the round-r branch and ranked against the
corpus (the base model's document vectors); its excluded candidates are never ranked. The
rule is ``sugar mine``'s (:func:`sugar.mine.select_negatives`): skip the positives, drop
candidates scoring above ``best positive - margin`` as likely false negatives, keep the best
``k`` that remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from sugar.control.branch import ControlBranch
from sugar.control.embed import embed_instructed
from sugar.data.instructed import InstructedSet
from sugar.mine import select_negatives
from sugar.models.base import MLLM
from sugar.models.prefix import RetrievalProjector

__all__ = ["mine_instructed"]


def mine_instructed(
    model: MLLM,
    projector: RetrievalProjector,
    branch: ControlBranch,
    data: InstructedSet,
    corpus_vectors: Tensor,
    root: str | Path,
    *,
    k: int,
    margin: float,
    depth: int,
    image_pool: Literal["mean", "last"] = "mean",
    slice_text_by: Literal["sentence", "segment"] = "sentence",
    readings: Sequence[Tensor] | None = None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """``{query id: [mined corpus ids]}`` and a summary (``queries``, ``mined``,
    ``filtered_false_negatives``, ``short``: queries with fewer than ``k``). ``readings``:
    the queries' :func:`sugar.control.embed.read_instructions`, or ``None``."""
    queries = embed_instructed(
        model, projector, branch, data.queries, data.instructions, root,
        batch_size=64, image_pool=image_pool, slice_text_by=slice_text_by, readings=readings,
    )  # fmt: skip
    scores = (queries @ corpus_vectors.T).masked_fill(data.excluded, float("-inf"))  # (Q, C)
    relevance = data.relevance
    top = scores.topk(min(depth, scores.shape[1]), dim=1)
    mined: dict[str, list[str]] = {}
    summary = {"queries": len(data.queries), "mined": 0, "filtered_false_negatives": 0,
               "short": 0}  # fmt: skip
    for i, query in enumerate(data.queries):
        best_positive = float(scores[i][relevance[i]].max())
        hits = [
            {"id": data.corpus[c].id, "score": float(s)}
            for s, c in zip(top.values[i].tolist(), top.indices[i].tolist(), strict=True)
            if s != float("-inf")
        ]
        kept, counts = select_negatives(
            hits, set(query.meta["positives"]), best_positive, k, margin
        )
        mined[query.id] = [hit["id"] for hit in kept]
        summary["mined"] += len(kept)
        summary["filtered_false_negatives"] += counts["filtered_false_negatives"]
        summary["short"] += len(kept) < k
    return mined, summary
