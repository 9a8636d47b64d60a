from __future__ import annotations

import itertools
import re
from typing import Literal

import pytest
import torch

from sugar.data.collate import (
    IGNORE_INDEX,
    Batch,
    assign_tokens,
    batches_by_token_budget,
    collate,
    encode_sample,
)
from sugar.data.schema import Sample, Segment
from sugar.data.slices import slices
from sugar.models.splice import splice_image_features
from sugar.models.tokenizer import Tokenizer
from tests.models.helpers import small_tokenizer

T, Img = Segment.text_, Segment.image_


class CharTokenizer:
    """One token per character, id = code point (all > 3): ids you can write by hand."""

    pad_id, bos_id, eos_id, image_id = 0, 1, 2, 3

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        return [ord(c) for c in text], [(i, i + 1) for i in range(len(text))]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return small_tokenizer()


SAMPLES = [
    Sample(
        "story",
        [
            Img("a.png"),
            T("Look at this. It is odd!\n\nSee? Zoë… naps."),
            Img("b.png"),
            T("A red cat sits. It naps... Then it leaves.", role="target"),
            Img("c.png"),
        ],
    ),
    Sample("vqa", [T("Question: what is <image> here? "), T("Blue.", role="target")]),
    Sample("caption-first", [T("  Leading spaces. Then more.  ", role="target"), Img("d.png")]),
    Sample("unicode", [T("Café au lait. Très bon 🎉! 🎉 Fin.\nLine two", role="target")]),
    Sample("image-only", [Img("e.png"), Img("f.png")]),
]


@pytest.mark.parametrize("by", ["sentence", "segment"])
def test_text_span_decodes_to_its_slice(
    tokenizer: Tokenizer, by: Literal["sentence", "segment"]
) -> None:
    """Precisely: decode(span) = (whitespace the first token carries) + slice.text."""
    batch = collate(SAMPLES, tokenizer, image_tokens=2, slice_text_by=by)
    for row, sample in enumerate(SAMPLES):
        for span, piece in zip(batch.spans[row], slices(sample, by=by), strict=True):
            if span.kind != "text":
                continue
            decoded = tokenizer.decode(batch.input_ids[row, span.start : span.end].tolist())
            assert piece.text is not None and decoded.endswith(piece.text), (decoded, piece)
            lead = decoded[: len(decoded) - len(piece.text)]
            before = (sample.segments[span.segment].text or "")[: piece.start]
            assert lead.strip() == "" and before.endswith(lead)  # whitespace from the text


@pytest.mark.parametrize("image_tokens", [1, 4])
def test_spans_follow_slices_and_images_cover_placeholders(
    tokenizer: Tokenizer, image_tokens: int
) -> None:
    batch = collate(SAMPLES, tokenizer, image_tokens=image_tokens)
    assert batch.images == [path for s in SAMPLES for path in s.images]
    assert batch.image_counts.tolist() == [len(s.images) for s in SAMPLES]
    for row, sample in enumerate(SAMPLES):
        spans, expected = batch.spans[row], slices(sample)
        assert [(s.kind, s.role, s.segment) for s in spans] == [
            (x.kind, x.role, x.segment) for x in expected
        ]
        assert [s.slice for s in spans] == list(range(len(expected)))
        assert all(1 <= a.start < a.end <= b.start for a, b in itertools.pairwise(spans))
        ids = batch.input_ids[row]
        image_positions = [t for t in range(len(ids)) if ids[t] == tokenizer.image_id]
        from_spans = [t for s in spans if s.kind == "image" for t in range(s.start, s.end)]
        assert all(s.end - s.start == image_tokens for s in spans if s.kind == "image")
        assert image_positions == from_spans  # every placeholder, in image order, nothing else


def test_hand_worked_ids_labels_spans_and_padding() -> None:
    samples = [
        Sample("s", [Img("x.png"), T("Hi."), T("Go. Up.", role="target")]),
        Sample("t", [T("A.", role="target")]),
    ]
    batch = collate(samples, CharTokenizer(), image_tokens=2)
    H, i, dot, G, o, sp, U, p, A = (ord(c) for c in "Hi.Go UpA")
    X = IGNORE_INDEX
    assert batch.input_ids.tolist() == [
        [1, 3, 3, H, i, dot, G, o, dot, sp, U, p, dot, 2],
        [1, A, dot, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert batch.labels.tolist() == [
        [X, X, X, X, X, X, G, o, dot, sp, U, p, dot, 2],
        [X, A, dot, 2, X, X, X, X, X, X, X, X, X, X],
    ]
    assert [(s.start, s.end, s.kind, s.role) for s in batch.spans[0]] == [
        (1, 3, "image", "context"),
        (3, 6, "text", "context"),
        (6, 9, "text", "target"),
        (10, 13, "text", "target"),  # the space (position 9) belongs to no sentence
    ]
    assert batch.lengths.tolist() == [14, 4]
    assert batch.sample_ids == ["s", "t"]
    plain = collate(samples, CharTokenizer(), 2, add_bos=False, add_eos_to_targets=False)
    assert plain.input_ids[1].tolist()[:3] == [A, dot, 0]
    assert plain.spans[0][0].start == 0


def _naive_layout(sample: Sample, tokenizer: Tokenizer, image_tokens: int) -> list[list[int]]:
    """Reference ids and labels, segment by segment (bos, placeholders, text, eos)."""
    ids, labels = [tokenizer.bos_id], [IGNORE_INDEX]
    for segment in sample.segments:
        if segment.text is None:
            ids += [tokenizer.image_id] * image_tokens
            labels += [IGNORE_INDEX] * image_tokens
        elif segment.role == "context":
            ids += tokenizer.encode(segment.text)
            labels += [IGNORE_INDEX] * len(tokenizer.encode(segment.text))
        else:
            ids += [*tokenizer.encode(segment.text), tokenizer.eos_id]
            labels += [*tokenizer.encode(segment.text), tokenizer.eos_id]
    return [ids, labels]


def test_labels_are_ignored_everywhere_but_targets(tokenizer: Tokenizer) -> None:
    batch = collate(SAMPLES, tokenizer, image_tokens=3)
    for row, sample in enumerate(SAMPLES):
        n = int(batch.lengths[row])
        ids, labels = batch.input_ids[row].tolist(), batch.labels[row].tolist()
        assert [ids[:n], labels[:n]] == _naive_layout(sample, tokenizer, 3), sample.id
        # From the spans alone: bos, images, context text and padding are never supervised;
        # target slices are supervised with their own ids.
        ignored = {0, *range(n, len(ids))}
        for span in batch.spans[row]:
            positions = range(span.start, span.end)
            if span.role == "target":
                assert all(labels[t] == ids[t] for t in positions)
            else:
                ignored.update(positions)
        assert all(labels[t] == IGNORE_INDEX for t in ignored)
        eos = [t for t in range(n) if ids[t] == tokenizer.eos_id]
        targets = sum(s.role == "target" for s in sample.segments)
        assert len(eos) == targets and all(labels[t] == tokenizer.eos_id for t in eos)


def test_attention_mask_and_padding_match_lengths(tokenizer: Tokenizer) -> None:
    batch = collate(SAMPLES, tokenizer, image_tokens=2)
    positions = torch.arange(batch.input_ids.shape[1])
    assert batch.attention_mask.dtype == torch.bool
    assert torch.equal(batch.attention_mask, positions[None, :] < batch.lengths[:, None])
    assert batch.input_ids.shape[1] == int(batch.lengths.max())
    assert bool((batch.input_ids[~batch.attention_mask] == tokenizer.pad_id).all())
    assert bool((batch.labels[~batch.attention_mask] == IGNORE_INDEX).all())
    assert bool((batch.input_ids[batch.attention_mask] != tokenizer.pad_id).all())
    moved = batch.to("meta")
    assert moved.input_ids.device.type == "meta" and batch.input_ids.device.type == "cpu"


def test_too_long_sample_raises_with_its_id(tokenizer: Tokenizer) -> None:
    length = len(encode_sample(SAMPLES[0], tokenizer, 2).input_ids)
    collate(SAMPLES[:1], tokenizer, 2, max_tokens=length)
    with pytest.raises(ValueError, match=f"sample 'story' has {length} tokens > max_tokens"):
        collate(SAMPLES, tokenizer, 2, max_tokens=length - 1)


def test_assign_tokens_rules() -> None:
    # A token overlapping two sentences goes where it starts.
    assert assign_tokens([(0, 2), (2, 4), (4, 6)], [(0, 3), (3, 6)]) == [(0, 2), (2, 3)]
    # Tokens before, between and after the sentences belong to none.
    assert assign_tokens([(0, 1), (1, 3), (3, 4), (4, 6), (6, 7)], [(1, 3), (4, 6)]) == [
        (1, 2),
        (3, 4),
    ]
    with pytest.raises(ValueError, match=re.escape("characters [3, 5) get no token")):
        assign_tokens([(0, 5)], [(0, 2), (3, 5)])


def test_text_encoding_to_image_placeholder_raises() -> None:
    class Leaky(CharTokenizer):
        def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
            return [3 for _ in text], [(i, i + 1) for i in range(len(text))]

    with pytest.raises(ValueError, match="sample 'q' segment 0: text encodes to <image>"):
        collate([Sample("q", [T("x")])], Leaky(), 1)


def _naive_splice(
    embeddings: torch.Tensor, ids: torch.Tensor, features: torch.Tensor, image_id: int
) -> torch.Tensor:
    out, flat, n = embeddings.clone(), features.reshape(-1, features.shape[-1]), 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if ids[b, t] == image_id:
                out[b, t], n = flat[n], n + 1
    return out


def test_splice_places_features_at_placeholders(tokenizer: Tokenizer) -> None:
    batch = collate(SAMPLES, tokenizer, image_tokens=2)
    images, width = len(batch.images), 3
    embeddings = (-torch.rand(*batch.input_ids.shape, width)).requires_grad_(True)  # (B, T, D)
    features = torch.arange(images * 2 * width, dtype=torch.float32).reshape(images, 2, width)
    features.requires_grad_(True)
    out = splice_image_features(embeddings, batch.input_ids, features, image_id=3)
    assert torch.equal(out, _naive_splice(embeddings, batch.input_ids, features, 3))
    out.sum().backward()
    placeholder = batch.input_ids == 3
    assert embeddings.grad is not None and features.grad is not None
    assert bool((embeddings.grad[placeholder] == 0).all())
    assert bool((embeddings.grad[~placeholder] == 1).all())
    assert bool((features.grad == 1).all())


def test_splice_raises_with_both_counts() -> None:
    ids = torch.tensor([[5, 3, 3, 3, 3, 6]])  # 4 placeholders
    with pytest.raises(ValueError, match=r"4 image placeholder positions .* 6 image feature"):
        splice_image_features(torch.zeros(1, 6, 2), ids, torch.zeros(3, 2, 2), image_id=3)
    ids = torch.tensor([[3, 3, 3, 5, 3, 6]])  # 4 placeholders, but runs of 3 and 1
    with pytest.raises(ValueError, match="image 1: its 2 placeholder positions are not one run"):
        splice_image_features(torch.zeros(1, 6, 2), ids, torch.zeros(2, 2, 2), image_id=3)
    with pytest.raises(ValueError, match="D = 2"):
        splice_image_features(torch.zeros(1, 6, 2), ids, torch.zeros(2, 2, 5), image_id=3)


def _many(count: int) -> list[Sample]:
    return [
        Sample(f"m{i}", [Img("x.png")] * (i % 3) + [T("A red cat sits. " * (1 + i % 5), "target")])
        for i in range(count)
    ]


@pytest.mark.parametrize("sort_window", [None, 1, 4, 100])
@pytest.mark.parametrize("budget", [60, 150, 1000])
def test_budget_batches_respect_budget_and_keep_every_sample(
    tokenizer: Tokenizer, budget: int, sort_window: int | None
) -> None:
    samples = _many(23)
    batches = list(batches_by_token_budget(samples, tokenizer, 2, budget, sort_window=sort_window))
    for batch in batches:
        assert collate(batch, tokenizer, 2).input_ids.numel() <= budget
    flat = [s.id for batch in batches for s in batch]
    if sort_window in (None, 1):
        assert flat == [s.id for s in samples]
    else:
        window = sort_window
        length = {s.id: len(encode_sample(s, tokenizer, 2).input_ids) for s in samples}
        for start in range(0, len(samples), window):
            chunk = flat[start : start + window]
            assert sorted(chunk) == sorted(s.id for s in samples[start : start + window])
            assert [length[i] for i in chunk] == sorted((length[i] for i in chunk), reverse=True)
    if budget == 1000:
        assert len(batches) < len(samples) / 2  # not trivially one sample per batch
    again = list(batches_by_token_budget(samples, tokenizer, 2, budget, sort_window=sort_window))
    assert [[s.id for s in b] for b in again] == [[s.id for s in b] for b in batches]


def test_budget_sample_over_budget_raises_with_its_id(tokenizer: Tokenizer) -> None:
    samples = _many(5)
    length = len(encode_sample(samples[4], tokenizer, 2).input_ids)
    with pytest.raises(ValueError, match=f"sample 'm4' has {length} tokens > max_batch_tokens"):
        list(batches_by_token_budget(samples, tokenizer, 2, length - 1))


def test_batch_is_a_dataclass_of_tensors(tokenizer: Tokenizer) -> None:
    batch = collate(SAMPLES[:2], tokenizer, 1)
    assert isinstance(batch, Batch)
    for name in ("input_ids", "labels", "image_counts", "lengths"):
        assert getattr(batch, name).dtype == torch.long
