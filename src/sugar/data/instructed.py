"""Instructed retrieval data: queries with an instruction, one shared candidate corpus.

Shapes: Q queries, C corpus candidates.

The layout (the built-in world writes it, :mod:`sugar.data.world.instructed`; user data is
converted to it by :func:`convert_instructed`)::

    <root>/instructed/<split>.jsonl          queries: the query's segments, meta {"instruction",
                                             "positives", "negatives", "exclude", "corpus",
                                             "intent", "heldout_intent"}
    <root>/instructed_corpus/<split>.jsonl   candidates, one sample each, addressed by id

``positives``, ``negatives`` (stated hard negatives, may be empty) and ``exclude`` (never
ranked, e.g. the query's own image) are corpus ids; ``corpus`` is the corpus file relative to
the root. :func:`read_instructed` checks that every id exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.io import atomic_write_text

__all__ = ["InstructedSet", "convert_instructed", "read_instructed", "write_instructed"]


@dataclass
class InstructedSet:
    """Queries and their corpus, with ids resolved to corpus rows."""

    queries: list[Sample]
    corpus: list[Sample]

    def __post_init__(self) -> None:
        self.row = {sample.id: i for i, sample in enumerate(self.corpus)}
        if len(self.row) != len(self.corpus):
            raise ValueError("instructed corpus: duplicate candidate ids")
        for query in self.queries:
            for field in ("positives", "negatives", "exclude"):
                for cid in query.meta.get(field, []):
                    if cid not in self.row:
                        raise ValueError(
                            f"query {query.id!r}: {field} names {cid!r}, not in the corpus"
                        )
            if not query.meta.get("positives"):
                raise ValueError(f"query {query.id!r}: no positives")
            if not str(query.meta.get("instruction", "")).strip():
                raise ValueError(f"query {query.id!r}: no instruction")

    @property
    def instructions(self) -> list[str]:
        return [str(q.meta["instruction"]) for q in self.queries]

    @cached_property
    def relevance(self) -> Tensor:
        """True at (query, positive candidate). # (Q, C) bool"""
        out = torch.zeros(len(self.queries), len(self.corpus), dtype=torch.bool)
        for i, query in enumerate(self.queries):
            out[i, [self.row[c] for c in query.meta["positives"]]] = True
        return out

    @cached_property
    def excluded(self) -> Tensor:
        """True at (query, candidate never ranked for it). # (Q, C) bool"""
        out = torch.zeros(len(self.queries), len(self.corpus), dtype=torch.bool)
        for i, query in enumerate(self.queries):
            rows = [self.row[c] for c in query.meta.get("exclude", [])]
            out[i, rows] = True
        return out


def read_instructed(path: str | Path, root: str | Path) -> InstructedSet:
    """The queries at ``path`` and the one corpus their ``meta.corpus`` names (relative to
    ``root``); ``ValueError`` naming the query when they name different corpora or an id is
    missing."""
    queries = read_samples(path, root)
    if not queries:
        raise ValueError(f"{path}: no queries")
    corpora = {str(q.meta.get("corpus")) for q in queries}
    if len(corpora) != 1 or "None" in corpora:
        raise ValueError(f"{path}: queries must all name one meta.corpus, found {sorted(corpora)}")
    return InstructedSet(queries, read_samples(Path(root) / corpora.pop(), root))


def _item(value: Any, where: str) -> list[Segment]:
    if isinstance(value, str):
        return [Segment.text_(value)]
    if isinstance(value, Mapping) and set(value) <= {"text", "image"} and value:
        segments = [Segment.image_(str(value["image"]))] if value.get("image") else []
        return segments + ([Segment.text_(str(value["text"]))] if value.get("text") else [])
    raise ValueError(f"{where}: a text or a {{'text', 'image'}} object, not {value!r}")


def convert_instructed(
    rows: Iterable[Mapping[str, Any]], split: str, source: str = "<rows>"
) -> tuple[list[Sample], list[Sample]]:
    """User rows ``{"query", "instruction", "positive", "negatives"?, "intent"?}`` (query,
    positive and negatives each a text or ``{"text", "image"}``) -> ``(queries, corpus)``.

    The corpus is every distinct positive and negative (ids ``doc-0``, ``doc-1``, ... in order
    of first appearance), shared by all queries. ``ValueError`` names the row (1-based)."""
    corpus: list[Sample] = []
    ids: dict[str, str] = {}
    queries: list[Sample] = []

    def document(value: Any, where: str) -> str:
        segments = _item(value, where)
        key = json.dumps([s.to_dict() for s in segments], sort_keys=True)
        if key not in ids:
            ids[key] = f"doc-{len(ids)}"
            corpus.append(Sample(ids[key], segments, "instructed_corpus", {}))
        return ids[key]

    for line, row in enumerate(rows, start=1):
        where = f"{source}: row {line}"
        missing = [k for k in ("query", "instruction", "positive") if k not in row]
        unknown = sorted(set(row) - {"query", "instruction", "positive", "negatives", "intent"})
        if missing or unknown:
            raise ValueError(f"{where}: missing {missing}, unknown {unknown}")
        meta = {
            "instruction": str(row["instruction"]),
            "positives": [document(row["positive"], f"{where}: positive")],
            "negatives": [document(n, f"{where}: negative") for n in row.get("negatives", [])],
            "exclude": [],
            "corpus": f"instructed_corpus/{split}.jsonl",
            "intent": str(row.get("intent", "user")),
            "heldout_intent": False,
        }
        queries.append(Sample(f"instructed-{split}-{line:06d}", _item(row["query"], where),
                              "instructed", meta))  # fmt: skip
    return queries, corpus


def write_instructed(
    root: str | Path, split: str, queries: list[Sample], corpus: list[Sample]
) -> Path:
    """Write ``root/instructed/<split>.jsonl`` and its corpus atomically; returns the first."""
    root = Path(root)
    atomic_write_text(root / "instructed_corpus" / f"{split}.jsonl",
                      "".join(s.to_json() + "\n" for s in corpus))  # fmt: skip
    return atomic_write_text(root / "instructed" / f"{split}.jsonl",
                             "".join(s.to_json() + "\n" for s in queries))  # fmt: skip
