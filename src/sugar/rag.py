"""Retrieval-augmented generation with the same model (METHOD.md section 6).

Shapes: Q questions, K retrieved items per question, P projector width.

A *knowledge item* has a **key** (segments: a text naming the fact, such as a question or a
record title, and/or an image; what is embedded and indexed) and a **payload** (a text: the fact
or answer; what the prompt shows, never embedded). The world's keys are worded differently from
its questions (``Manufacturing record of object 271828.`` for ``Where was object 271828 made?``).
On disk an item is an ordinary sample whose segments are the key and whose ``meta`` holds the
payload under ``payload`` (the built-in world's ``kb_items/<split>.jsonl``); an index built from
such a file keeps each sample's JSON as the entry metadata, so the payload travels with the hit.

Answering a question (text plus optional image):

1. the question's segments ``[image?, question]`` are embedded as one sample, with the function
   training uses (:func:`sugar.embed.embed_samples`);
2. the top-k entries by key are taken from the index (cosine score);
3. their payloads fill :class:`PromptTemplate`: one ``reference`` line per item, in rank order,
   joined by ``separator``, as one context text segment placed ``before`` (default) or ``after``
   the question's segments;
4. the same model generates the continuation of that prompt.

With ``retrieval=False`` the prompt is the question's segments alone (the plain prompt).

>>> template = PromptTemplate()
>>> prompt = build_prompt(question_sample("Who made it?"), ["Ada made it.", "Leo painted it."],
...                       template)
>>> [segment.text for segment in prompt.segments]
['Ada made it.\\nLeo painted it.', 'Who made it?']
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sugar.data.prompt import with_references
from sugar.data.schema import Sample, Segment
from sugar.embed import embed_vectors
from sugar.index.base import Index
from sugar.models.base import MLLM
from sugar.models.prefix import RetrievalProjector

__all__ = [
    "KnowledgeItem",
    "PromptTemplate",
    "RagAnswer",
    "answer",
    "build_prompt",
    "index_knowledge",
    "knowledge_item",
    "payload_of",
    "question_sample",
    "retrieve",
]

QueryEmbedder = Callable[[list[Sample]], Any]
"""Retrieval queries (each a question's context segments) -> their vectors (Q, P)."""

PAYLOAD_FIELD = "payload"
"""The ``meta`` key holding a knowledge item's payload."""


@dataclass(frozen=True)
class KnowledgeItem:
    """A fact to retrieve: ``key`` segments are embedded, ``payload`` is only ever shown."""

    id: str
    key: tuple[Segment, ...]
    """What is embedded (a text naming the fact and/or an image); never contains the payload."""
    payload: str
    """What the prompt shows when the item is retrieved."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Other metadata kept with the index entry (e.g. ``fact_id``, ``answer``)."""

    def key_sample(self) -> Sample:
        """The sample that is embedded: the key segments only, no metadata."""
        return Sample(self.id, list(self.key), "kb_item")

    def to_sample(self) -> Sample:
        """The item as a JSONL sample: key segments, payload in ``meta.payload``."""
        return Sample(
            self.id, list(self.key), "kb_item", {**self.meta, PAYLOAD_FIELD: self.payload}
        )


def knowledge_item(sample: Sample) -> KnowledgeItem:
    """Read a knowledge item from a sample (segments = key, ``meta.payload`` = payload)."""
    payload = sample.meta.get(PAYLOAD_FIELD)
    if not isinstance(payload, str) or not payload:
        raise ValueError(
            f"sample {sample.id!r}: a knowledge item needs a non-empty text in meta.payload"
        )
    meta = {key: value for key, value in sample.meta.items() if key != PAYLOAD_FIELD}
    return KnowledgeItem(sample.id, tuple(sample.segments), payload, meta)


def payload_of(hit: Mapping[str, Any]) -> str:
    """The payload of a search hit with metadata (the indexed sample's ``meta.payload``)."""
    meta = hit.get("metadata", {}).get("meta", {})
    payload = meta.get(PAYLOAD_FIELD) if isinstance(meta, Mapping) else None
    if not isinstance(payload, str):
        raise ValueError(
            f"index entry {hit.get('id')!r} has no meta.payload: build the index from knowledge "
            "items (samples whose meta holds a payload, e.g. the world's kb_items JSONL)"
        )
    return payload


@dataclass(frozen=True)
class PromptTemplate:
    """How retrieved payloads enter the prompt.

    The references text is ``separator.join(reference.format(payload=..., rank=..., id=...))``
    over the retrieved items in rank order (rank 1 first); it becomes one context text segment,
    placed ``before`` the question's segments (default) or ``after`` them.
    """

    reference: str = "{payload}"
    """One retrieved item; fields ``{payload}``, ``{rank}`` (1-based) and ``{id}``. The default
    shows the bare fact, as the world's KB-QA evaluation (``sugar.eval.tasks.kb_qa``) and its
    knowledge-base training samples do (the fact, then the question), so ``sugar ask`` with k=1
    builds the prompt that task scores and the layout the model was trained to read."""
    separator: str = "\n"
    """Between references."""
    position: Literal["before", "after"] = "before"
    """Where the references segment goes relative to the question's segments."""

    def __post_init__(self) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(self.reference) if name}
        if "payload" not in fields:
            raise ValueError(f"reference={self.reference!r}: must contain '{{payload}}'")
        unknown = sorted(fields - {"payload", "rank", "id"})
        if unknown:
            raise ValueError(
                f"reference={self.reference!r}: unknown field(s) {unknown}; "
                "known: payload, rank, id"
            )
        if self.position not in ("before", "after"):
            raise ValueError(f"position={self.position!r}: must be 'before' or 'after'")

    def references(self, payloads: Sequence[str], ids: Sequence[str] | None = None) -> str:
        """The references text of ``payloads`` (rank order)."""
        ids = ids if ids is not None else [""] * len(payloads)
        return self.separator.join(
            self.reference.format(payload=payload, rank=rank, id=id)
            for rank, (payload, id) in enumerate(zip(payloads, ids, strict=True), start=1)
        )


def question_sample(question: str, image: str | None = None, id: str = "question") -> Sample:
    """A question as a context-only sample: ``[image?, question]`` (the layout of the world's
    knowledge-base questions)."""
    segments = [Segment.image_(image)] if image is not None else []
    return Sample(id, [*segments, Segment.text_(question)], "question")


def build_prompt(
    question: Sample,
    payloads: Sequence[str],
    template: PromptTemplate,
    ids: Sequence[str] | None = None,
) -> Sample:
    """The prompt that generation continues: the question's context segments plus, when there
    are ``payloads``, one references segment placed by :func:`sugar.data.prompt.with_references`
    (the layout the world's knowledge-base training samples and ``kb_qa`` use; see
    :class:`PromptTemplate`). No payloads: the plain prompt (the question's context segments
    unchanged)."""
    context = [segment for segment in question.segments if segment.role == "context"]
    if not context:
        raise ValueError(f"question {question.id!r} has no context segments to ask")
    prompt = Sample(question.id, context, question.task, dict(question.meta))
    if not payloads:
        return prompt
    return with_references(prompt, template.references(payloads, ids), template.position)


@dataclass
class RagAnswer:
    """What :func:`answer` returns for one question."""

    answer: str
    """The generated text."""
    prompt: Sample
    """The exact prompt the model continued."""
    sources: list[dict[str, Any]]
    """Retrieved items in rank order: ``{"id", "score", "payload"}`` (empty without retrieval)."""

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "prompt": self.prompt.to_dict(), "sources": self.sources}


def index_knowledge(
    model: MLLM,
    projector: RetrievalProjector,
    items: Sequence[KnowledgeItem],
    root: str | Path,
    index: Index,
    **embed_options: Any,
) -> None:
    """Embed each item's key (never its payload) and add it to ``index`` with the item's
    sample JSON (payload included) as metadata. ``embed_options`` go to
    :func:`sugar.embed.embed_samples` (``batch_size``, ``image_pool``, ``slice_text_by``, ...)."""
    vectors = embed_vectors(
        model, projector, [item.key_sample() for item in items], root, **embed_options
    )
    index.add([item.id for item in items], vectors, [item.to_sample().to_dict() for item in items])


def retrieve(
    model: MLLM,
    projector: RetrievalProjector,
    index: Index,
    questions: Sequence[Sample],
    root: str | Path,
    k: int,
    embed_queries: QueryEmbedder | None = None,
    **embed_options: Any,
) -> list[list[dict[str, Any]]]:
    """Per question, the top-``k`` entries of ``index`` as ``{"id", "score", "payload"}``; the
    query is each question's context segments (its targets, e.g. a reference answer, are
    dropped so they cannot leak into retrieval), embedded by ``embed_queries`` when given
    (e.g. steered by an instruction), else by ``model`` and ``projector``."""
    queries = [build_prompt(question, [], PromptTemplate()) for question in questions]
    if embed_queries is not None:
        vectors = embed_queries(queries)  # (Q, P)
    else:
        vectors = embed_vectors(model, projector, queries, root, **embed_options)  # (Q, P)
    hits = index.search(vectors, k, with_metadata=True)
    return [
        [{"id": hit["id"], "score": hit["score"], "payload": payload_of(hit)} for hit in row]
        for row in hits
    ]


def answer(
    model: MLLM,
    projector: RetrievalProjector | None,
    index: Index | None,
    questions: Sequence[Sample],
    root: str | Path,
    *,
    k: int = 3,
    retrieval: bool = True,
    template: PromptTemplate | None = None,
    max_new_tokens: int = 32,
    embed_queries: QueryEmbedder | None = None,
    **embed_options: Any,
) -> list[RagAnswer]:
    """Answer each question (context segments ``[image?, question]``; targets are ignored):
    retrieve ``k`` payloads, build the prompt, generate greedily with ``model``.

    ``retrieval=False`` generates from the plain prompt; ``projector`` and ``index`` are then
    unused and may be ``None``. ``embed_queries`` replaces how the retrieval queries are
    embedded (:func:`retrieve`); the prompt and the generation stay ``model``'s.
    """
    template = template or PromptTemplate()
    if retrieval:
        if projector is None or index is None:
            raise ValueError("retrieval needs a retrieval projector and an index")
        sources = retrieve(
            model, projector, index, questions, root, k, embed_queries, **embed_options
        )
    else:
        sources = [[] for _ in questions]
    prompts = [
        build_prompt(
            question,
            [hit["payload"] for hit in hits],
            template,
            [hit["id"] for hit in hits],
        )
        for question, hits in zip(questions, sources, strict=True)
    ]
    texts = model.generate(prompts, root, max_new_tokens=max_new_tokens)
    return [
        RagAnswer(text, prompt, hits)
        for text, prompt, hits in zip(texts, prompts, sources, strict=True)
    ]
