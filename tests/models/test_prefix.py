"""Prefix embeddings: one pass = each prefix alone; the embed API = the loss's r, bit for bit."""

from __future__ import annotations

import torch

from sugar.data.schema import Sample
from sugar.data.slices import slices
from sugar.embed import embed_samples
from sugar.losses.structure import sample_prefixes
from sugar.models.prefix import RetrievalProjector, embed_prefixes, slice_states
from sugar.models.tiny import TinyMLLM
from tests.models.conftest import TINY, TinyWorld


def _prefix_sample(sample: Sample, end: int) -> Sample:
    """The sample cut after slice ``end`` (slices are whole segments or sentences)."""
    pieces = slices(sample, by="segment")
    return Sample(f"{sample.id}:{end}", list(sample.segments[: pieces[end].segment + 1]))


def test_one_pass_equals_each_prefix_alone(tiny_world: TinyWorld) -> None:
    model = TinyMLLM(tiny_world.tokenizer, **TINY).eval()
    projector = RetrievalProjector(model.hidden_size, 16)
    story = tiny_world.stories[0]
    rows = embed_samples(
        model, projector, [story], tiny_world.root, prefixes=True, slice_text_by="segment"
    )
    assert isinstance(rows, list) and rows[0].shape == (len(slices(story, by="segment")), 16)
    for end in range(rows[0].shape[0]):
        alone = embed_samples(
            model, projector, [_prefix_sample(story, end)], tiny_world.root,
            slice_text_by="segment",
        )  # fmt: skip
        assert isinstance(alone, torch.Tensor)
        torch.testing.assert_close(rows[0][end], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rows[0].norm(dim=-1), torch.ones(rows[0].shape[0]))


def test_embed_api_equals_the_loss_r_bit_for_bit(tiny_world: TinyWorld) -> None:
    model = TinyMLLM(tiny_world.tokenizer, **TINY).eval()
    projector = RetrievalProjector(model.hidden_size, 16)
    samples = tiny_world.stories[:3]
    batch = model.collate(samples, tiny_world.root)
    with torch.no_grad():
        hidden = model(batch).hidden
        b, e, _ = sample_prefixes(
            [len(s) for s in batch.spans], 3, torch.Generator().manual_seed(0)
        )
        r = embed_prefixes(hidden, batch.spans, b, e, projector)  # what the structure loss uses
    rows = embed_samples(model, projector, samples, tiny_world.root, prefixes=True)
    assert isinstance(rows, list)
    for i, (sample, end) in enumerate(zip(b.tolist(), e.tolist(), strict=True)):
        assert torch.equal(r[i], rows[sample][end])


def test_image_pool_mean_and_last(tiny_world: TinyWorld) -> None:
    model = TinyMLLM(tiny_world.tokenizer, **TINY).eval()
    batch = model.collate(tiny_world.captions[:1], tiny_world.root)
    with torch.no_grad():
        hidden = model(batch).hidden
    span = batch.spans[0][0]
    assert span.kind == "image"
    zero = torch.tensor([0])
    mean = slice_states(hidden, batch.spans, zero, zero, "mean")
    last = slice_states(hidden, batch.spans, zero, zero, "last")
    torch.testing.assert_close(mean[0], hidden[0, span.start : span.end].mean(0))
    assert torch.equal(last[0], hidden[0, span.end - 1])


def test_encode_query_and_document(tiny_world: TinyWorld) -> None:
    from sugar.embed import embed_texts, encode_document, encode_query

    model = TinyMLLM(tiny_world.tokenizer, **TINY).eval()
    projector = RetrievalProjector(model.hidden_size, 16)
    texts = ["A red square.", "A blue circle."]
    plain = embed_texts(model, projector, texts)
    assert torch.equal(encode_query(model, projector, texts), plain)  # no instruction: the same
    assert torch.equal(encode_document(model, projector, texts), plain)
    instructed = encode_query(model, projector, texts, instruction="Find the image.")
    assert instructed.shape == plain.shape and not torch.allclose(instructed, plain)
    torch.testing.assert_close(instructed.norm(dim=-1), torch.ones(2))
