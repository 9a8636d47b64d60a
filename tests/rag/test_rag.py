"""sugar.rag: the payload is never embedded, the prompt is assembled exactly, no retrieval gives
the plain prompt, and generation uses the same model on that prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from sugar.data.schema import Sample, Segment
from sugar.embed import embed_samples
from sugar.index import build_index
from sugar.rag import (
    KnowledgeItem,
    PromptTemplate,
    answer,
    build_prompt,
    index_knowledge,
    knowledge_item,
    question_sample,
    retrieve,
)
from tests.rag.conftest import RagWorld


def _items(world: RagWorld) -> list[KnowledgeItem]:
    return [knowledge_item(sample) for sample in world.kb_items]


def test_knowledge_item_reads_key_and_payload(rag_world: RagWorld) -> None:
    sample = rag_world.kb_items[0]
    item = knowledge_item(sample)
    assert item.payload == sample.meta["payload"]
    assert list(item.key) == sample.segments
    assert item.key_sample().meta == {}
    assert item.to_sample().to_dict() == sample.to_dict()
    with pytest.raises(ValueError, match=r"meta\.payload"):
        knowledge_item(Sample("x", [Segment.text_("a question?")]))


def test_payload_is_never_embedded(rag_world: RagWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    model, items = rag_world.model, _items(rag_world)
    seen: list[Sample] = []
    collate = model.collate

    def recording_collate(samples: Sequence[Sample], root: Any, **kwargs: Any) -> Any:
        seen.extend(samples)
        return collate(samples, root, **kwargs)

    monkeypatch.setattr(model, "collate", recording_collate)
    index = build_index("exact", 16, "test-model")
    index_knowledge(model, rag_world.projector, items, rag_world.root, index)
    assert len(seen) == len(items) and len(index) == len(items)
    texts = [segment.text for sample in seen for segment in sample.segments if segment.text]
    for item in items:
        assert all(item.payload not in text for text in texts)
    assert all(not sample.meta for sample in seen)
    # Same key, different payloads: the same vector (score 1 to the key, tied).
    key = items[1].key
    twins = [KnowledgeItem("a", key, "Payload one."), KnowledgeItem("b", key, "Other payload.")]
    twin_index = build_index("exact", 16, "test-model")
    index_knowledge(model, rag_world.projector, twins, rag_world.root, twin_index)
    query = embed_samples(model, rag_world.projector, [twins[0].key_sample()], rag_world.root)
    hits = twin_index.search(query, k=2, with_metadata=True)[0]
    assert hits[0]["score"] == hits[1]["score"]
    assert [hit["metadata"]["meta"]["payload"] for hit in hits] == [
        "Payload one.",
        "Other payload.",
    ]


def test_prompt_assembly_is_exact_for_a_hand_built_case() -> None:
    question = question_sample("Where was object 7 made?", image="images/x.png", id="q1")
    payloads = ["Object 7 was made in Oslo.", "Object 8 was made in Lima."]
    prompt = build_prompt(question, payloads, PromptTemplate(), ids=["kb-7", "kb-8"])
    assert prompt.id == "q1"
    assert prompt.segments == [
        Segment.text_("Object 7 was made in Oslo.\nObject 8 was made in Lima."),
        Segment.image_("images/x.png"),
        Segment.text_("Where was object 7 made?"),
    ]
    after = PromptTemplate(reference="[{rank}] {payload} ({id})", separator=" ", position="after")
    assert build_prompt(question, payloads, after, ids=["kb-7", "kb-8"]).segments == [
        Segment.image_("images/x.png"),
        Segment.text_("Where was object 7 made?"),
        Segment.text_(
            "[1] Object 7 was made in Oslo. (kb-7) [2] Object 8 was made in Lima. (kb-8)"
        ),
    ]
    # A question's target (a reference answer) never enters the prompt.
    with_answer = Sample("q2", [*question.segments, Segment.text_("Oslo", role="target")])
    assert build_prompt(with_answer, [], PromptTemplate()).segments == question.segments
    with pytest.raises(ValueError, match="payload"):
        PromptTemplate(reference="Reference")
    with pytest.raises(ValueError, match="unknown field"):
        PromptTemplate(reference="{payload} {score}")


def _kb_index(world: RagWorld) -> Any:
    index = build_index("exact", 16, "test-model")
    index_knowledge(world.model, world.projector, _items(world), world.root, index)
    return index


def test_no_retrieval_gives_the_plain_prompt(rag_world: RagWorld) -> None:
    question = rag_world.kb[1]  # [question, answer (target)]
    (result,) = answer(
        rag_world.model, None, None, [question], rag_world.root, retrieval=False, max_new_tokens=4
    )
    plain = [segment for segment in question.segments if segment.role == "context"]
    assert result.prompt.segments == plain
    assert result.sources == []
    assert (
        result.answer
        == rag_world.model.generate([result.prompt], rag_world.root, max_new_tokens=4)[0]
    )


def test_retrieval_answers_from_the_retrieved_payloads(rag_world: RagWorld) -> None:
    index = _kb_index(rag_world)
    # Queries equal to the first four keys (a question's wording differs from its key).
    questions = [Sample(s.id, list(s.segments), "question", s.meta) for s in rag_world.kb_items[:4]]
    results = answer(
        rag_world.model,
        rag_world.projector,
        index,
        questions,
        rag_world.root,
        k=2,
        max_new_tokens=4,
    )
    retrieved = retrieve(rag_world.model, rag_world.projector, index, questions, rag_world.root, 2)
    for question, result, hits in zip(questions, results, retrieved, strict=True):
        assert result.sources == hits and len(hits) == 2
        # The query is its item's key: that item is retrieved first (score 1).
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        own = next(s for s in rag_world.kb_items if s.meta["fact_id"] == question.meta["fact_id"])
        assert own.meta["payload"] in [hit["payload"] for hit in hits]
        expected = build_prompt(question, [hit["payload"] for hit in hits], PromptTemplate())
        assert result.prompt.segments == expected.segments
        again = rag_world.model.generate([result.prompt], rag_world.root, max_new_tokens=4)
        assert result.answer == again[0]


def test_embed_queries_decides_retrieval_and_leaves_the_prompt_alone(rag_world: RagWorld) -> None:
    """The hook ask(instruction=) steers through: it gets the queries (targets dropped) and its
    vectors alone pick the sources; prompts and answers stay the questions' own."""
    from sugar.embed import embed_vectors

    index = _kb_index(rag_world)
    model, projector, root = rag_world.model, rag_world.projector, rag_world.root
    questions = [Sample(s.id, list(s.segments), "question", s.meta) for s in rag_world.kb_items[:2]]
    others = [Sample(s.id, list(s.segments), "question", s.meta) for s in rag_world.kb_items[2:4]]
    seen: list[list[Sample]] = []

    def embed_others(queries: list[Sample]) -> Any:
        seen.append(queries)
        other_queries = [build_prompt(other, [], PromptTemplate()) for other in others]
        return embed_vectors(model, projector, other_queries, root)

    results = answer(model, projector, index, questions, root, k=2, max_new_tokens=3,
                     embed_queries=embed_others)  # fmt: skip
    expected = retrieve(model, projector, index, others, root, 2)
    assert [result.sources for result in results] == expected
    assert expected != retrieve(model, projector, index, questions, root, 2)
    assert [q.segments for q in seen[0]] == [
        build_prompt(q, [], PromptTemplate()).segments for q in questions
    ]
    for question, result, hits in zip(questions, results, expected, strict=True):
        prompt = build_prompt(question, [hit["payload"] for hit in hits], PromptTemplate())
        assert result.prompt.segments == prompt.segments
        assert result.answer == model.generate([prompt], root, max_new_tokens=3)[0]


def test_retrieval_needs_a_projector_and_an_index(rag_world: RagWorld) -> None:
    with pytest.raises(ValueError, match="projector and an index"):
        answer(rag_world.model, None, None, rag_world.kb[:1], rag_world.root)
