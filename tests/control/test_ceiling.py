"""benchmarks/control_ceiling.py: R@1 against a per-query loop, and the per-intent query maps
(the identity when training never helps validation; a learned re-weighting when the documents
separate what the intent asks for)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ceiling() -> ModuleType:
    spec = importlib.util.spec_from_file_location("control_ceiling", REPO / "benchmarks" /
                                                  "control_ceiling.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_r_at_1_matches_a_per_query_loop(ceiling: ModuleType) -> None:
    torch.manual_seed(0)
    queries, corpus = torch.randn(30, 6), torch.randn(12, 6)
    corpus[5] = corpus[4]  # a tie between two candidates
    relevance = torch.rand(30, 12) < 0.2
    relevance[:, 0] = True
    excluded = (torch.rand(30, 12) < 0.2) & ~relevance
    for q in range(30):
        got = ceiling.r_at_1(queries[q : q + 1], corpus, relevance[q : q + 1], excluded[q : q + 1])
        scores = [(float(queries[q] @ corpus[c]), c) for c in range(12) if not excluded[q, c]]
        best = max(s for s, c in scores if relevance[q, c])
        # a tie with an irrelevant candidate counts against the query
        want = all(relevance[q, c] or s < best for s, c in scores)
        assert got == float(want)


def separable(seed: int, n: int = 16, repeats: int = 1) -> tuple[torch.Tensor, ...]:
    """One corpus (the same for every seed) and ``repeats`` queries per document, drawn with
    ``seed``: query i's positive is document i % n, both holding the one-hot key i % n in dims
    0..n-1 and loud noise in the n dims after, so the plain vectors rank by noise and a map
    that silences the query's noise dims ranks every query right."""
    keys = torch.eye(n)
    noise = torch.randn(n, n, generator=torch.Generator().manual_seed(1000))
    corpus = torch.cat([keys, 2 * noise], dim=1)
    generator = torch.Generator().manual_seed(seed)
    queries = torch.cat([keys.repeat(repeats, 1),
                         2 * torch.randn(n * repeats, n, generator=generator)], dim=1)  # fmt: skip
    relevance = torch.eye(n, dtype=torch.bool).repeat(repeats, 1)
    excluded = torch.zeros(n * repeats, n, dtype=torch.bool)
    return F.normalize(queries, dim=-1), F.normalize(corpus, dim=-1), relevance, excluded


@pytest.mark.parametrize("kind, repeats", [("diag", 1), ("full", 16)])
def test_a_map_learns_what_the_documents_separate(
    ceiling: ModuleType, kind: str, repeats: int
) -> None:
    # a full map needs more queries than a diagonal one: with one per document it learns each
    # training query's noise, validation never improves and the identity is kept
    train, val, test = separable(0, repeats=repeats), separable(1), separable(2)
    base = ceiling.r_at_1(*test)
    mapped, step = ceiling.fit_map(kind, train, val, steps=200, every=20, lr=0.05)
    learned = ceiling.r_at_1(mapped(test[0]), *test[1:])
    assert step > 0 and base < 0.5 and learned > base + 0.3


def test_a_map_that_never_helps_validation_stays_the_identity(ceiling: ModuleType) -> None:
    train = separable(0)
    # validation queries that are their own documents: the identity already ranks all of them
    # first, training can at best tie, and the first best step (0, the identity) is kept
    _, corpus, relevance, excluded = separable(1)
    mapped, step = ceiling.fit_map("diag", train, (corpus, corpus, relevance, excluded),
                                   steps=60, every=20, lr=0.05)  # fmt: skip
    assert step == 0
    assert torch.equal(mapped(corpus), F.normalize(corpus, dim=-1))
