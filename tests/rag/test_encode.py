"""sentence-transformers conventions: ``SugarModel.encode`` / ``encode_query`` /
``encode_document`` and the ``sugar.st`` module, against ``embed`` on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import sugar
from sugar.data.schema import Sample, Segment
from sugar.embed import encode_query
from tests.rag.conftest import RagWorld


def test_encode_matches_embed_for_every_input_kind(rag_world: RagWorld) -> None:
    model, root = sugar.load(rag_world.bundle), rag_world.root
    texts = ["A red square.", "Where was object 7 made?"]
    reference = model.embed(texts=texts)
    assert isinstance(reference, torch.Tensor)
    vectors = model.encode(texts)
    assert isinstance(vectors, np.ndarray) and vectors.shape == (2, 16)
    np.testing.assert_array_equal(vectors, reference.numpy())
    one = model.encode("A red square.")
    assert one.shape == (16,)
    np.testing.assert_allclose(one, reference[0].numpy(), rtol=0, atol=1e-6)
    tensor = model.encode(texts, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and torch.equal(tensor, reference)
    rows = model.encode(texts, convert_to_numpy=False)
    assert isinstance(rows, list) and torch.equal(rows[1], reference[1])
    # images: a path in a dict, a PIL image, a text with its image, a sample
    path = rag_world.captions[0].images[0]
    with Image.open(root / path) as opened:
        pil = opened.convert("RGB")
    image_alone = model.embed(images=[path], root=root)
    pair = model.embed([Sample("p", [Segment.image_(path), Segment.text_("A red square.")])],
                       root=root)  # fmt: skip
    assert isinstance(image_alone, torch.Tensor) and isinstance(pair, torch.Tensor)
    got = model.encode(
        [{"image": path}, pil, {"text": "A red square.", "image": pil},
         {"text": "A red square.", "image": path}, rag_world.captions[0]],
        root=root,
    )  # fmt: skip
    np.testing.assert_allclose(got[0], image_alone[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[1], image_alone[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[2], pair[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[3], pair[0].numpy(), rtol=0, atol=1e-6)
    caption = model.embed(rag_world.captions[:1], root=root)
    assert isinstance(caption, torch.Tensor)
    np.testing.assert_allclose(got[4], caption[0].numpy(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown key"):
        model.encode([{"txt": "a"}])
    with pytest.raises(ValueError, match="not int"):
        model.encode([3])  # type: ignore[list-item]


def test_prompts_truncation_and_query_document(rag_world: RagWorld) -> None:
    model = sugar.load(rag_world.bundle)
    texts = ["A red square."]
    instructed = encode_query(rag_world.model, rag_world.projector, texts, instruction="Find:")
    np.testing.assert_allclose(model.encode(texts, prompt="Find:"), instructed.numpy(), atol=1e-6)
    np.testing.assert_allclose(
        model.encode_query(texts, instruction="Find:"), instructed.numpy(), atol=1e-6
    )
    plain = model.encode(texts)
    np.testing.assert_array_equal(model.encode_query(texts), plain)  # no prompts: no change
    np.testing.assert_array_equal(model.encode_document(texts), plain)
    with pytest.raises(ValueError, match="prompt_name='query'"):
        model.encode(texts, prompt_name="query")
    model.prompts = {"query": "Find:"}
    np.testing.assert_allclose(model.encode_query(texts), instructed.numpy(), atol=1e-6)
    np.testing.assert_array_equal(model.encode_document(texts), plain)
    short = model.encode(texts, truncate_dim=4, normalize_embeddings=True)
    assert short.shape == (1, 4)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), [1.0], atol=1e-6)
    np.testing.assert_allclose(short[0], plain[0, :4] / np.linalg.norm(plain[0, :4]), atol=1e-6)
    assert model.encode(texts, truncate_dim=4).shape == (1, 4)


def test_sentence_transformers_module(rag_world: RagWorld, tmp_path) -> None:
    pytest.importorskip("sentence_transformers", minversion="6.0")
    from sentence_transformers import SentenceTransformer

    from sugar.st import SugarEncoder, sentence_transformer

    model = sugar.load(rag_world.bundle)
    st = sentence_transformer(rag_world.bundle, root=rag_world.root)
    path = rag_world.captions[0].images[0]
    with Image.open(rag_world.root / path) as opened:
        pil = opened.convert("RGB")
    texts = ["A red square.", "Where was object 7 made?"]
    np.testing.assert_allclose(st.encode(texts), model.encode(texts), rtol=0, atol=1e-6)
    np.testing.assert_allclose(st.encode([pil]), model.encode([pil]), rtol=0, atol=1e-6)
    pair = {"text": "A red square.", "image": pil}
    np.testing.assert_allclose(st.encode([pair]), model.encode([pair]), rtol=0, atol=1e-6)
    assert st.get_embedding_dimension() == 16
    similarity = st.similarity(st.encode_query(texts[:1]), st.encode_document(texts))
    assert similarity.shape == (1, 2)
    st.save(str(tmp_path / "st"))  # a sentence-transformers folder naming the bundle
    again = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True, device="cpu")
    assert isinstance(again[0], SugarEncoder)
    np.testing.assert_allclose(again.encode(texts), model.encode(texts), rtol=0, atol=1e-6)


def test_text_without_a_visible_character_is_refused_by_name(rag_world: RagWorld) -> None:
    model = sugar.load(rag_world.bundle)
    with pytest.raises(ValueError, match=r"nothing to embed: no image, and its text \['\\u200b'\]"):
        model.encode(["A red square.", "\u200b"])
    with pytest.raises(ValueError, match=r"text-0.*nothing to embed"):
        model.embed(texts=["\u00ad"])
    assert model.encode(["A red square.", "\u200bA red square."]).shape == (2, 16)
