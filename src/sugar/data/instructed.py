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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sugar.data.jsonl import DataError, read_samples
from sugar.data.schema import Sample, Segment
from sugar.io import atomic_write_text

__all__ = [
    "InstructedSet",
    "convert_instructed",
    "instructed_rows",
    "read_instructed",
    "write_instructed",
]


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


FIELDS = ("query", "instruction", "positive", "negatives", "intent")
"""The fields of a user row: ``query``, ``instruction`` and ``positive`` required."""

ImageSegment = Callable[[str, Any], Segment]
"""Makes the image segment of a path value (``(field, value)``), checking it as it likes."""


def _plain_image(field: str, value: Any) -> Segment:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}.image={value!r}: must be a non-empty image path")
    return Segment.image_(value)


def _item(value: Any, field: str, image: ImageSegment) -> list[Segment]:
    """The segments of a query, positive or negative: a text, or ``{"text", "image"}`` (image
    first; either may be missing, not both)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{field}={value!r}: must be non-empty text")
        return [Segment.text_(value.strip())]
    if isinstance(value, Mapping) and value and set(value) <= {"text", "image"}:
        segments = [image(field, value["image"])] if value.get("image") is not None else []
        text = value.get("text")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"{field}.text={text!r}: must be non-empty text")
        segments += [Segment.text_(text.strip())] if text is not None else []
        if segments:
            return segments
    raise ValueError(f"{field}={value!r}: must be a text or a {{'text', 'image'}} object")


def instructed_rows(
    rows: Iterable[tuple[Any, Any]],
    split: str,
    error: Callable[[Any, str], Exception],
    image: ImageSegment = _plain_image,
    corpus: str | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """The core of :func:`convert_instructed` and of the ``instructed_retrieval`` converter:
    ``rows`` are ``(location, row)``; ``error(location, detail)`` makes the exception that
    names a bad row; ``corpus`` is the corpus file relative to the root (default
    ``instructed_corpus/<split>.jsonl``)."""
    corpus_path = f"instructed_corpus/{split}.jsonl" if corpus is None else corpus
    documents: list[Sample] = []
    ids: dict[str, str] = {}
    queries: list[Sample] = []

    def document(value: Any, field: str) -> str:
        segments = _item(value, field, image)
        key = json.dumps([s.to_dict() for s in segments], sort_keys=True)
        if key not in ids:
            ids[key] = f"doc-{len(ids)}"
            documents.append(Sample(ids[key], segments, "instructed_corpus", {}))
        return ids[key]

    for number, (location, row) in enumerate(rows, start=1):
        try:
            if not isinstance(row, Mapping):
                raise ValueError(f"must be a JSON object, got {type(row).__name__}")
            missing = [k for k in FIELDS[:3] if k not in row]
            unknown = sorted(str(k) for k in set(row) - set(FIELDS))
            if missing or unknown:
                raise ValueError(f"missing {missing}, unknown {unknown}")
            instruction, intent = row["instruction"], row.get("intent", "user")
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError(f"instruction={instruction!r}: must be non-empty text")
            if not isinstance(intent, str) or not intent.strip():
                raise ValueError(f"intent={intent!r}: must be non-empty text")
            negatives = row.get("negatives", [])
            if not isinstance(negatives, list):
                raise ValueError(f"negatives={negatives!r}: must be a list")
            meta = {
                "instruction": instruction.strip(),
                "positives": [document(row["positive"], "positive")],
                "negatives": [document(n, f"negatives[{i}]") for i, n in enumerate(negatives)],
                "exclude": [],
                "corpus": corpus_path,
                "intent": intent.strip(),
                "heldout_intent": False,
            }
            segments = _item(row["query"], "query", image)
            queries.append(Sample(f"instructed-{split}-{number:06d}", segments, "instructed", meta))
        except ValueError as exc:  # SchemaError and DataError too: name the row once
            detail = exc.detail if isinstance(exc, DataError) else str(exc)
            raise error(location, detail) from None
    return queries, documents


def convert_instructed(
    rows: Iterable[Mapping[str, Any]], split: str, source: str = "<rows>"
) -> tuple[list[Sample], list[Sample]]:
    """User rows ``{"query", "instruction", "positive", "negatives"?, "intent"?}`` (query,
    positive and negatives each a text or ``{"text", "image"}``) -> ``(queries, corpus)``.

    The corpus is every distinct positive and negative (ids ``doc-0``, ``doc-1``, ... in order
    of first appearance), shared by all queries. ``ValueError`` names the row (1-based). From a
    file: ``sugar data convert instructed_retrieval`` (:mod:`sugar.data.convert`)."""

    def error(number: Any, detail: str) -> Exception:
        return ValueError(f"{source}: row {number}: {detail}")

    return instructed_rows(enumerate(rows, start=1), split, error)


def write_instructed(
    root: str | Path, split: str, queries: list[Sample], corpus: list[Sample]
) -> Path:
    """Write ``root/instructed/<split>.jsonl`` and its corpus atomically; returns the first."""
    root = Path(root)
    atomic_write_text(root / "instructed_corpus" / f"{split}.jsonl",
                      "".join(s.to_json() + "\n" for s in corpus))  # fmt: skip
    return atomic_write_text(root / "instructed" / f"{split}.jsonl",
                             "".join(s.to_json() + "\n" for s in queries))  # fmt: skip
