"""The MiniLM backbone (all-MiniLM-L6-v2 as a causal decoder) against the MLLM contracts."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from sugar.data.collate import IGNORE_INDEX
from sugar.data.schema import Sample, Segment
from sugar.data.slices import slices
from sugar.models.base import backbone_class
from sugar.models.minilm import MiniLMMLLM, WordPieceTokenizer
from tests.models.conftest import TinyWorld

OPTIONS = {"image_size": 64, "grid": 1, "feature_cache": None, "dropout": 0.0}


@pytest.fixture(scope="module")
def minilm(tiny_world: TinyWorld) -> MiniLMMLLM:
    """A fresh MiniLM backbone whose output vocabulary is the tiny world's captions'."""
    texts = [seg.text for s in tiny_world.captions for seg in s.segments if seg.text]
    model = MiniLMMLLM.build(texts, {**OPTIONS, "max_positions": 512}, {})
    model.prepare(tiny_world.captions, tiny_world.root)
    return model.eval()


def test_registered_and_trunk_is_causal(minilm: MiniLMMLLM, tiny_world: TinyWorld) -> None:
    assert backbone_class("minilm") is MiniLMMLLM
    sample = tiny_world.stories[0]
    batch = minilm.collate([sample], tiny_world.root)
    changed = batch.input_ids.clone()
    changed[0, -2] = minilm.tokenizer.encode("zebra")[0]  # a token near the end
    with torch.no_grad():
        before = minilm(batch).hidden
        after = minilm.forward(type(batch)(**{**batch.__dict__, "input_ids": changed})).hidden
    assert torch.equal(before[0, :-2], after[0, :-2])  # earlier positions never see it
    assert not torch.allclose(before[0, -2], after[0, -2])


def test_spans_cover_every_slice_and_labels_map_to_the_output_vocabulary(
    minilm: MiniLMMLLM, tiny_world: TinyWorld
) -> None:
    samples = tiny_world.stories[:1] + tiny_world.captions[:2]
    batch = minilm.collate(samples, tiny_world.root)
    out = minilm(batch)
    assert out.logits.shape[-1] == minilm.output_vocab_size < minilm.tokenizer.vocab_size
    for row, (sample, spans) in enumerate(zip(samples, batch.spans, strict=True)):
        for span, piece in zip(spans, slices(sample), strict=True):
            ids = batch.input_ids[row, span.start : span.end].tolist()
            if piece.kind == "image":
                assert ids == [minilm.tokenizer.image_id] * minilm.image_tokens
            else:  # uncased WordPiece: the text comes back lower-cased
                decoded = minilm.tokenizer.decode(ids)
                assert decoded.replace(" ", "") == piece.text.lower().replace(" ", "")
    caption = batch.labels[1]
    supervised = caption[caption != IGNORE_INDEX]
    full_ids = minilm.output_ids[supervised]
    target = next(g for g in samples[1].segments if g.role == "target").text
    assert target is not None
    expected = [*minilm.tokenizer.encode(target), minilm.tokenizer.eos_id]
    assert full_ids.tolist() == expected


def test_invisible_characters_after_a_sentence_get_no_slice_of_their_own(
    minilm: MiniLMMLLM,
) -> None:
    """WordPiece drops zero-width spaces, soft hyphens and lone combining marks: trailing ones
    once made a slice with no token and stopped training at the step that drew the sample."""
    texts = ["A dog. \u200b", "A dog. \u0301", "A dog.\xa0\xad"]
    samples = [Sample(f"s{i}", [Segment.text_(t, "target")]) for i, t in enumerate(texts)]
    batch = minilm.collate(samples, Path("."))
    assert [len(spans) for spans in batch.spans] == [1, 1, 1]


def test_corpus_head_gives_the_full_heads_logits_on_its_ids(
    minilm: MiniLMMLLM, tiny_world: TinyWorld
) -> None:
    batch = minilm.collate(tiny_world.captions[:2], tiny_world.root)
    with torch.no_grad():
        hidden = minilm(batch).hidden
        trimmed = minilm.logits(hidden)
        rows = minilm.trunk.embeddings.word_embeddings.weight  # (V, D): the full tied head
        full = minilm.head(hidden, rows, torch.zeros(rows.shape[0]))
    torch.testing.assert_close(trimmed, full[..., minilm.output_ids] + minilm.output_bias)


def test_a_target_word_outside_the_output_vocabulary_is_counted_and_warned(
    minilm: MiniLMMLLM, tiny_world: TinyWorld
) -> None:
    image = tiny_world.captions[0].images[0]
    sample = Sample("odd", [Segment.image_(image), Segment.text_("A xylophone.", "target")])
    before = minilm.unmapped_targets
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = minilm.collate([sample], tiny_world.root)
    assert minilm.unmapped_targets > before
    if before == 0:
        assert any("outside the output vocabulary" in str(w.message) for w in caught)
    unk = int(minilm.to_output[minilm.tokenizer.unk_id])
    assert unk in batch.labels[0].tolist()


def test_generation_with_the_kv_cache_equals_recomputation(
    minilm: MiniLMMLLM, tiny_world: TinyWorld
) -> None:
    samples = [tiny_world.captions[0], tiny_world.stories[0], tiny_world.captions[3]]
    cached = minilm.generate(samples, tiny_world.root, max_new_tokens=6)
    plain = minilm.generate(samples, tiny_world.root, max_new_tokens=6, use_cache=False)
    assert cached == plain
    alone = minilm.generate(samples[1:2], tiny_world.root, max_new_tokens=6)
    assert alone == cached[1:2]  # left padding changes nothing
    again = minilm.generate(samples, tiny_world.root, max_new_tokens=6, temperature=1.0, seed=3)
    same = minilm.generate(samples, tiny_world.root, max_new_tokens=6, temperature=1.0, seed=3)
    assert again == same
    assert all(isinstance(text, str) and text == text.lower() for text in cached)


def test_user_text_never_becomes_an_image_placeholder(minilm: MiniLMMLLM) -> None:
    assert minilm.tokenizer.image_id not in minilm.tokenizer.encode("see [unused0] here")


def test_save_load_round_trip_and_feature_standardisation(
    minilm: MiniLMMLLM, tiny_world: TinyWorld, tmp_path: Path
) -> None:
    assert not torch.equal(minilm.feature_mean, torch.zeros_like(minilm.feature_mean))
    spec = minilm.save_pretrained(tmp_path)
    loaded = MiniLMMLLM.from_pretrained(tmp_path, spec).eval()
    for name, tensor in minilm.state_dict().items():
        if not name.startswith("vision.encoder."):  # the frozen encoder comes from its package
            assert torch.equal(loaded.state_dict()[name], tensor), name
    batch = minilm.collate(tiny_world.captions[:3], tiny_world.root)
    with torch.no_grad():  # vision features computed in other batch shapes differ by ~1e-6
        torch.testing.assert_close(loaded(batch).logits, minilm(batch).logits, atol=1e-3, rtol=0)
    assert loaded.identity == minilm.identity
    assert isinstance(loaded.tokenizer, WordPieceTokenizer)
    tokens = loaded.image_tokens_of([str(tiny_world.root / tiny_world.captions[0].images[0])])
    assert tokens.shape == (1, 1, loaded.hidden_size)


def test_trunk_learns_slower_than_the_new_parts(minilm: MiniLMMLLM) -> None:
    assert minilm.parameter_lr_scale("trunk.encoder.layer.0.attention.self.query.weight") == 0.1
    assert minilm.parameter_lr_scale("adapter.weight") == 1.0


def test_bfloat16_autocast_keeps_float32_outputs_and_travels_in_the_bundle(
    minilm: MiniLMMLLM, tiny_world: TinyWorld, tmp_path: Path
) -> None:
    spec = minilm.save_pretrained(tmp_path)
    low = MiniLMMLLM.from_pretrained(tmp_path, {**spec, "autocast": "bfloat16"}).eval()
    batch = minilm.collate(tiny_world.captions[:3], tiny_world.root)
    with torch.no_grad():
        exact, approx = minilm(batch), low(batch)
    assert approx.hidden.dtype == approx.logits.dtype == torch.float32
    assert not torch.equal(approx.hidden, exact.hidden)  # the products did run in bfloat16
    cosine = torch.nn.functional.cosine_similarity(approx.hidden, exact.hidden, dim=-1)
    assert float(cosine.min()) > 0.99
    again = MiniLMMLLM.from_pretrained(tmp_path / "low", low.save_pretrained(tmp_path / "low"))
    assert again.spec["autocast"] == "bfloat16"
    cached = low.generate(tiny_world.captions[:2], tiny_world.root, max_new_tokens=4)
    assert cached == low.generate(
        tiny_world.captions[:2], tiny_world.root, max_new_tokens=4, use_cache=False
    )


def test_an_unknown_autocast_setting_is_refused(tiny_world: TinyWorld) -> None:
    with pytest.raises(ValueError, match="autocast='half'"):
        MiniLMMLLM.build(["a"], {**OPTIONS, "max_positions": 64, "autocast": "half"}, {})


def test_sparse_word_embedding_gradients_sum_to_the_dense_gradient(
    minilm: MiniLMMLLM, tiny_world: TinyWorld
) -> None:
    """The word-embedding table gets sparse gradients (one per lookup: the inputs of each
    forward and the tied head's rows); densified, two passes accumulated give exactly the
    gradient of a dense table."""
    from torch.nn import functional as F

    from sugar.train.loop import densify_gradients

    batches = [
        minilm.collate(tiny_world.captions[:2], tiny_world.root),
        minilm.collate(tiny_world.captions[2:4], tiny_world.root),
    ]
    table = minilm.trunk.embeddings.word_embeddings
    assert table.sparse

    def accumulated() -> torch.Tensor:
        table.weight.grad = None
        for batch in batches:
            logits = minilm(batch).logits.flatten(0, 1)
            F.cross_entropy(logits, batch.labels.flatten()).backward()  # output-vocabulary ids
        densify_gradients([table.weight])
        grad = table.weight.grad
        assert grad is not None and not grad.is_sparse
        return grad.clone()

    sparse = accumulated()
    table.sparse = False  # the dense reference: inputs and head rows with dense gradients
    try:
        dense = accumulated()
    finally:
        table.sparse = True
        table.weight.grad = None
    assert int((sparse != 0).any(dim=1).sum()) > 10  # rows of inputs and of the head
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-7)


def test_standardisation_sample_is_uniform_not_the_first_folders() -> None:
    from sugar.models.minilm import standardisation_sample

    few = ["b.png", "a.png", "a.png"]
    assert standardisation_sample(few, 8) == ["a.png", "b.png"]  # all distinct, sorted
    # a set stored in class folders: the first 100 sorted paths are one class
    paths = [f"class{c:02d}/{i:04d}.jpg" for c in range(20) for i in range(100)]
    chosen = standardisation_sample(reversed(paths), 100)
    assert chosen == sorted(chosen) and len(set(chosen)) == 100
    assert len({p.split("/")[0] for p in chosen}) >= 15  # spread over the classes
    assert chosen == standardisation_sample(paths, 100)  # a function of the paths alone
    assert chosen != standardisation_sample(paths, 100, seed=1)
