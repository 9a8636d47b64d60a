"""Hard-negative mining: the selection equals a naive sort-and-filter over all candidates."""

from __future__ import annotations

import pytest
import torch

from sugar.embed import embed_samples, embed_texts
from sugar.mine import MINED_KIND, mine_hard_negatives, query_and_positive
from tests.rag.conftest import RagWorld


def _naive(world: RagWorld, k: int, margin: float) -> list[list[str]]:
    """Score every query against every distinct caption, sort, skip the positive and anything
    within ``margin`` of it, keep k."""
    pairs = [query_and_positive(s) for s in world.captions]
    texts = list(dict.fromkeys(p for _, p in pairs))
    candidates = embed_texts(world.model, world.projector, texts)
    queries = embed_samples(world.model, world.projector, [q for q, _ in pairs], world.root)
    assert isinstance(queries, torch.Tensor)
    out = []
    for row, (_, positive) in enumerate(pairs):
        scores = (queries[row] @ candidates.T).tolist()
        positive_score = float(
            queries[row] @ embed_texts(world.model, world.projector, [positive])[0]
        )
        ranked = sorted(zip(scores, texts, strict=True), key=lambda x: (-x[0], x[1]))
        kept = [t for s, t in ranked if t != positive and s <= positive_score - margin]
        out.append(kept[:k])
    return out


@pytest.mark.parametrize("margin", [0.0, 0.02])
def test_mining_matches_the_naive_reference(rag_world: RagWorld, margin: float) -> None:
    mined, summary = mine_hard_negatives(
        rag_world.model,
        rag_world.projector,
        rag_world.captions,
        rag_world.root,
        k=2,
        margin=margin,
    )
    expected = _naive(rag_world, 2, margin)
    assert summary["queries"] == len(rag_world.captions)
    assert summary["mined"] == sum(len(row) for row in expected)
    for before, after, want in zip(rag_world.captions, mined, expected, strict=True):
        negatives = after.meta["negatives"]
        assert negatives[: len(before.meta["negatives"])] == before.meta["negatives"]
        new = [n for n in negatives if n["kind"] == MINED_KIND]
        assert [n["caption"] for n in new] == want
        for n in new:
            assert n["score"] <= n["positive_score"] - margin + 1e-5
        assert after.segments == before.segments and after.id == before.id


def test_a_huge_margin_filters_everything_and_counts_it(rag_world: RagWorld) -> None:
    mined, summary = mine_hard_negatives(
        rag_world.model,
        rag_world.projector,
        rag_world.captions[:3],
        rag_world.root,
        k=2,
        margin=2.0,
        keep_existing=False,
    )
    assert summary["mined"] == 0 and summary["short"] == 3
    assert summary["filtered_false_negatives"] > 0
    assert all(sample.meta["negatives"] == [] for sample in mined)


def test_mining_needs_a_query_and_a_positive(rag_world: RagWorld) -> None:
    with pytest.raises(ValueError, match="kb_item"):
        mine_hard_negatives(
            rag_world.model, rag_world.projector, rag_world.kb_items[:1], rag_world.root
        )
