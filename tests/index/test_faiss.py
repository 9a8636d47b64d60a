"""FAISS backends against the exact index (the naive reference), plus IVF's training guard."""

from __future__ import annotations

import sys

import pytest
import torch

from sugar.index import ExactIndex, HNSWIndex, IVFIndex, build_index
from tests.index.conftest import unit_rows


def _ids(results: list[list[dict]]) -> list[list[str]]:
    return [[hit["id"] for hit in hits] for hits in results]


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    """Mean over queries of |found ∩ truth| / |truth|."""
    pairs = zip(found, truth, strict=True)
    return sum(len(set(f) & set(t)) / len(t) for f, t in pairs) / len(truth)


@pytest.fixture(scope="module")
def random_10k() -> tuple[list[str], torch.Tensor, torch.Tensor, list[list[str]]]:
    """10k x 64 unit vectors, 200 queries and the exact top-10 of each."""
    vectors, queries = unit_rows(10_000, 64, seed=10), unit_rows(200, 64, seed=11)
    ids = [f"v{i}" for i in range(len(vectors))]
    exact = ExactIndex(64, "model-a")
    exact.add(ids, vectors)
    return ids, vectors, queries, _ids(exact.search(queries, k=10))


def test_hnsw_recall_at_10_against_exact(random_10k) -> None:
    ids, vectors, queries, truth = random_10k
    index = build_index("hnsw", 64, "model-a")  # the defaults: M=32, efConstruction=200
    index.add(ids, vectors)
    assert _recall(_ids(index.search(queries, k=10)), truth) >= 0.95


def test_flat_equals_exact(random_10k) -> None:
    ids, vectors, queries, truth = random_10k
    index = build_index("flat", 64, "model-a")
    index.add(ids, vectors)
    results = index.search(queries, k=10)
    assert _ids(results) == truth
    scores = queries @ vectors.T  # (Q, N)
    for q, hits in enumerate(results):
        expected = [float(scores[q, int(hit["id"][1:])]) for hit in hits]
        assert [hit["score"] for hit in hits] == pytest.approx(expected, abs=1e-5)


def test_ivf_visiting_every_list_equals_exact(random_10k) -> None:
    ids, vectors, queries, truth = random_10k
    index = build_index("ivf", 64, "model-a", nlist=16, nprobe=16)
    index.add(ids, vectors)
    assert _ids(index.search(queries, k=10)) == truth
    assert isinstance(index, IVFIndex)
    index.nprobe = 1  # one list of 16: recall must drop, so the parameter reaches FAISS
    assert _recall(_ids(index.search(queries, k=10)), truth) < 0.9


@pytest.mark.parametrize("backend", ["hnsw", "ivf"])
def test_approximate_backends_return_every_entry_when_k_exceeds_the_count(backend: str) -> None:
    vectors = unit_rows(300, 16, seed=13)
    params = {"nlist": 4, "nprobe": 1} if backend == "ivf" else {"M": 4, "efSearch": 8}
    index = build_index(backend, 16, "model-a", **params)  # type: ignore[arg-type]
    index.add([f"v{i}" for i in range(300)], vectors)
    assert all(len(hits) == 300 for hits in index.search(vectors[:10], k=1000))


def test_hnsw_ef_search_reaches_faiss(random_10k) -> None:
    ids, vectors, queries, truth = random_10k
    index = HNSWIndex(64, "model-a", M=4, efConstruction=8, efSearch=10)
    index.add(ids[:2000], vectors[:2000])
    small = ExactIndex(64, "model-a")
    small.add(ids[:2000], vectors[:2000])
    truth = _ids(small.search(queries, k=10))
    low = _recall(_ids(index.search(queries, k=10)), truth)
    index.ef_search = 400
    assert _recall(_ids(index.search(queries, k=10)), truth) > low


def test_ivf_on_a_corpus_too_small_refuses_with_the_numbers() -> None:
    index = build_index("ivf", 16, "model-a", nlist=100)
    message = r"IVF with nlist=100 needs >= 3900 training vectors \(39 per list\), got 500"
    with pytest.raises(ValueError, match=message):
        index.add([f"v{i}" for i in range(500)], unit_rows(500, 16, seed=0))
    assert len(index) == 0


def test_hnsw_deleted_entries_are_never_returned() -> None:
    vectors = unit_rows(300, 16, seed=12)
    index = build_index("hnsw", 16, "model-a")
    index.add([f"v{i}" for i in range(300)], vectors)
    index.delete([f"v{i}" for i in range(0, 300, 2)])  # half the graph becomes tombstones
    assert index.info()["tombstones"] == 150
    results = index.search(vectors[:20], k=200)
    for hits in results:
        assert len(hits) == 150 and all(int(hit["id"][1:]) % 2 == 1 for hit in hits)
    index.compact()
    assert index.info()["tombstones"] == 0
    after = index.search(vectors[:20], k=200)
    assert [set(hits) for hits in _ids(after)] == [set(hits) for hits in _ids(results)]


def test_missing_faiss_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # what `import faiss` sees when absent
    with pytest.raises(ImportError, match=r"pip install 'sugar-mllm\[index\]'"):
        build_index("hnsw", 16, "model-a")
