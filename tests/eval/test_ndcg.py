"""nDCG@k against cases worked by hand and a naive reference (sorted list, log2 discounts)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sugar.eval.metrics import ndcg_at_k, ndcg_at_k_items


def naive_ndcg(scores: list[float], relevant: list[bool], k: int) -> float:
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], relevant[i]))[:k]
    dcg = sum(1 / math.log2(rank + 2) for rank, i in enumerate(ranked) if relevant[i])
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(k, sum(relevant))))
    return dcg / ideal


def test_hand_worked_cases() -> None:
    # relevant at rank 2 of 3, one relevant: 1/log2(3)
    assert ndcg_at_k([[0.9, 0.5, 0.1]], [1], k=3) == pytest.approx(1 / math.log2(3))
    # relevant below the cut-off: 0
    assert ndcg_at_k([[0.9, 0.5, 0.1]], [2], k=2) == 0.0
    # a tie with an irrelevant candidate counts against the query
    assert ndcg_at_k([[0.5, 0.5]], [1], k=1) == 0.0


def test_against_the_naive_reference() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 15)).round(1)  # rounding makes ties
    relevant = rng.random((20, 15)) < 0.2
    relevant[:, 0] = True
    got = ndcg_at_k_items(scores, relevant, k=10)
    expected = [naive_ndcg(list(s), list(r), 10) for s, r in zip(scores, relevant, strict=True)]
    assert got == pytest.approx(expected)
    with pytest.raises(ValueError, match="query 1 has no relevant item"):
        ndcg_at_k_items([[0.1, 0.2], [0.3, 0.4]], [[True, False], [False, False]], k=1)
