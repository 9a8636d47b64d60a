"""The exact index against a naive torch.topk reference, and the validation every backend shares."""

from __future__ import annotations

import math

import pytest
import torch

from sugar.index import ExactIndex, build_index, prefix_entry
from tests.index.conftest import unit_rows


def _reference(queries: torch.Tensor, vectors: torch.Tensor, k: int) -> list[list[int]]:
    """The naive reference: full score matrix, then torch.topk."""
    scores = queries @ vectors.T  # (Q, N)
    return torch.topk(scores, k, dim=1).indices.tolist()


def test_exact_agrees_with_torch_topk() -> None:
    vectors, queries = unit_rows(500, 32, seed=2), unit_rows(20, 32, seed=3)
    ids = [f"v{i}" for i in range(500)]
    index = ExactIndex(32, "model-a")
    index.add(ids[:300], vectors[:300])  # two batches: labels keep growing across adds
    index.add(ids[300:], vectors[300:])
    results = index.search(queries, k=7)
    expected = _reference(queries, vectors, 7)
    for hits, rows in zip(results, expected, strict=True):
        assert [hit["id"] for hit in hits] == [ids[row] for row in rows]
    scores = queries @ vectors.T
    for q, hits in enumerate(results):
        for hit in hits:
            assert hit["score"] == pytest.approx(float(scores[q, int(hit["id"][1:])]), abs=1e-6)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_ties_are_broken_by_id_even_at_the_kth_place() -> None:
    index = ExactIndex(2, "model-a")
    same = [[0.0, 1.0]] * 4
    index.add(["d", "b", "c", "a"], same)
    index.add(["z"], [[1.0, 0.0]])
    hits = index.search([[0.0, 1.0]], k=2)[0]
    assert [hit["id"] for hit in hits] == ["a", "b"]


def test_k_larger_than_the_live_count_returns_every_live_entry() -> None:
    index = ExactIndex(16, "model-a")
    assert index.search(unit_rows(2, 16, seed=0), k=3) == [[], []]
    index.add(["a", "b", "c"], unit_rows(3, 16, seed=4))
    index.delete(["b"])
    hits = index.search(unit_rows(1, 16, seed=5), k=10)[0]
    assert sorted(hit["id"] for hit in hits) == ["a", "c"]


def test_metadata_only_when_asked_and_prefix_entries() -> None:
    index = build_index("exact", 16, "model-a")
    entry_id, metadata = prefix_entry("story-1", 3, {"task": "story"})
    index.add([entry_id, "plain"], unit_rows(2, 16, seed=6), [metadata, None])
    query = unit_rows(1, 16, seed=6)[:1]
    assert set(index.search(query, k=2)[0][0]) == {"id", "score"}
    hits = index.search(query, k=2, with_metadata=True)[0]
    assert hits[0] == {
        "id": "story-1#3",
        "score": pytest.approx(1.0, abs=1e-6),
        "metadata": {"task": "story", "document_id": "story-1", "position": 3},
    }
    assert hits[1]["metadata"] == {}
    hits[0]["metadata"]["task"] = "changed"  # a copy: the index is not modified through it
    assert index.get_metadata("story-1#3")["task"] == "story"


@pytest.mark.parametrize(
    ("row", "value", "message"),
    [(2, math.nan, "has a non-finite"), (3, math.inf, "has a non-finite"), (1, 2.0, "has norm")],
)
def test_bad_vectors_are_refused_with_the_row_and_id(row: int, value: float, message: str) -> None:
    vectors = unit_rows(5, 4, seed=7)
    vectors[row, 0] = value
    index = ExactIndex(4, "model-a")
    with pytest.raises(ValueError, match=rf"vector row {row} \(id 'x{row}'\) {message}"):
        index.add([f"x{i}" for i in range(5)], vectors)
    assert len(index) == 0  # nothing half-added


def test_shape_duplicates_metadata_and_params_are_checked() -> None:
    index = ExactIndex(4, "model-a")
    with pytest.raises(ValueError, match=r"shape \(3, 5\), expected \(N, 4\)"):
        index.add(["a", "b", "c"], unit_rows(3, 5, seed=0))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        index.add(["a"], unit_rows(1, 4, seed=0)[0])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        index.add(["a", "a"], unit_rows(2, 4, seed=0))
    index.add(["a"], unit_rows(1, 4, seed=0))
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        index.add(["a"], unit_rows(1, 4, seed=1))
    with pytest.raises(ValueError, match="metadata of id 'b' is not JSON"):
        index.add(["b"], unit_rows(1, 4, seed=1), [{"x": object()}])
    with pytest.raises(ValueError, match="unknown id"):
        index.delete(["nope"])
    with pytest.raises(ValueError, match=r"query row 0 has norm"):
        index.search(2 * unit_rows(1, 4, seed=1), k=1)
    with pytest.raises(ValueError, match=r"unknown exact index parameter\(s\) \['M'\]"):
        build_index("exact", 4, "model-a", M=4)
    with pytest.raises(ValueError, match="unknown index backend 'annoy'"):
        build_index("annoy", 4, "model-a")  # type: ignore[arg-type]


def test_normalize_divides_rows_and_queries_by_their_norm() -> None:
    index = ExactIndex(2, "model-a", normalize=True)
    index.add(["a", "b"], [[3.0, 4.0], [0.0, 2.0]])
    hits = index.search([[0.0, 5.0]], k=2)[0]
    assert [(h["id"], round(h["score"], 5)) for h in hits] == [("b", 1.0), ("a", 0.8)]
    with pytest.raises(ValueError, match=r"vector row 0 \(id 'z'\) is all zeros"):
        index.add(["z"], [[0.0, 0.0]])
