"""sugar.load(dir).embed / search / ask: the bundle projector, the identity check, errors."""

from __future__ import annotations

import pytest
import torch

import sugar
from sugar.data.schema import Sample, Segment
from sugar.embed import embed_samples, embed_texts
from sugar.index import ModelIdentityError, build_index
from tests.rag.conftest import RagWorld


def test_embed_uses_the_bundle_projector(rag_world: RagWorld) -> None:
    model = sugar.load(rag_world.bundle)
    texts = ["A red square.", "Where was object 7 made?"]
    vectors = model.embed(texts=texts)
    assert isinstance(vectors, torch.Tensor) and vectors.shape == (2, 16)
    expected = embed_texts(rag_world.model, rag_world.projector, texts)
    torch.testing.assert_close(vectors, expected, rtol=0, atol=0)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(2))
    image = rag_world.captions[0].images[0]
    from_images = model.embed(images=[image], root=rag_world.root)
    from_samples = model.embed([Sample("i", [Segment.image_(image)])], root=rag_world.root)
    assert isinstance(from_images, torch.Tensor) and isinstance(from_samples, torch.Tensor)
    assert torch.equal(from_images, from_samples)
    rows = model.embed(rag_world.captions[:2], root=rag_world.root, prefixes=True)
    reference = embed_samples(
        rag_world.model, rag_world.projector, rag_world.captions[:2], rag_world.root, prefixes=True
    )
    assert isinstance(rows, list) and isinstance(reference, list)
    assert all(torch.equal(a, b) for a, b in zip(rows, reference, strict=True))
    with pytest.raises(ValueError, match="exactly one"):
        model.embed(texts=["a"], images=[image])


def test_a_bundle_without_projector_refuses_to_embed(rag_world: RagWorld) -> None:
    model = sugar.load(rag_world.plain_bundle)
    with pytest.raises(ValueError, match="no retrieval projector"):
        model.embed(texts=["a"])
    question = rag_world.kb[1].segments[0].text
    assert question is not None
    plain = model.ask(question, retrieval=False, max_new_tokens=2)  # generation still works
    assert plain.sources == [] and isinstance(plain.answer, str)


def test_search_and_ask_against_an_index_of_this_model(rag_world: RagWorld, tmp_path) -> None:
    model = sugar.load(rag_world.bundle)
    vectors = model.embed(rag_world.kb_items, root=rag_world.root)
    index = build_index("exact", 16, model.identity)
    index.add(
        [s.id for s in rag_world.kb_items], vectors, [s.to_dict() for s in rag_world.kb_items]
    )
    index.save(tmp_path / "kb")
    item = rag_world.kb_items[1]  # an "origin" fact: a question-only key
    question = item.segments[0].text
    assert question is not None
    hits = model.search(question, k=3, index=tmp_path / "kb", root=rag_world.root)
    assert hits[0]["id"] == item.id and len(hits) == 3
    assert hits[0]["metadata"]["meta"]["payload"] == item.meta["payload"]
    result = model.ask(question, k=2, index=index, root=rag_world.root, max_new_tokens=3)
    assert result.sources[0] == {
        "id": item.id,
        "score": hits[0]["score"],
        "payload": item.meta["payload"],
    }
    assert result.prompt.segments[0].text is not None
    assert result.prompt.segments[0].text.startswith(f"{item.meta['payload']}\n")
    other = build_index("exact", 16, "another-model")
    other.save(tmp_path / "other")
    with pytest.raises(ModelIdentityError):
        model.search(question, index=tmp_path / "other")
    with pytest.raises(ValueError, match="not of this model"):
        model.ask(question, index=other)
    with pytest.raises(ValueError, match="needs an index"):
        model.ask(question)
