"""The built-in small MLLM against the interface's contracts (issue 6 tests)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from sugar.data.collate import IGNORE_INDEX
from sugar.data.jsonl import DataError
from sugar.data.schema import Sample, Segment
from sugar.data.slices import slices
from sugar.models.base import MLLM, backbone_class, prompt_of, registered_backbones
from sugar.models.tiny import TinyMLLM
from tests.models.conftest import TINY, TinyWorld


def test_tiny_is_registered_and_an_mllm() -> None:
    assert "tiny" in registered_backbones()
    assert backbone_class("tiny") is TinyMLLM
    assert issubclass(TinyMLLM, MLLM)
    with pytest.raises(ValueError, match="unknown backbone family 'llava'; known"):
        backbone_class("llava")


def test_forward_shapes_and_spans_cover_every_slice(
    tiny_model: TinyMLLM, tiny_world: TinyWorld
) -> None:
    samples = tiny_world.stories[:2] + tiny_world.captions[:2]
    batch = tiny_model.collate(samples, tiny_world.root)
    out = tiny_model(batch)
    size, length = batch.input_ids.shape
    assert out.logits.shape == (size, length, tiny_world.tokenizer.vocab_size)
    assert out.hidden.shape == (size, length, tiny_model.hidden_size)
    for sample, spans in zip(samples, batch.spans, strict=True):
        pieces = slices(sample)
        assert len(spans) == len(pieces)
        for span, piece in zip(spans, pieces, strict=True):
            if piece.kind == "image":
                assert span.end - span.start == tiny_model.image_tokens
            else:
                text = tiny_world.tokenizer.decode(
                    batch.input_ids[samples.index(sample), span.start : span.end].tolist()
                )
                assert text.strip() == piece.text


def test_each_image_changes_only_the_outputs_at_and_after_its_tokens(
    tiny_model: TinyMLLM, tiny_world: TinyWorld
) -> None:
    """The image's features land at its placeholders: swapping the second image of a story
    leaves every position before its span unchanged and changes positions inside it."""
    story = tiny_world.stories[0]
    other = tiny_world.captions[5].images[0]
    segments = list(story.segments)
    second = [i for i, s in enumerate(segments) if s.kind == "image"][1]
    segments[second] = Segment.image_(other)
    swapped = Sample(story.id, segments)
    batch = tiny_model.collate([story, swapped], tiny_world.root)
    hidden = tiny_model(batch).hidden
    span = next(s for s in batch.spans[0] if s.segment == second)
    before = slice(0, span.start)
    torch.testing.assert_close(hidden[0, before], hidden[1, before], rtol=0, atol=0)
    assert not torch.allclose(hidden[0, span.start : span.end], hidden[1, span.start : span.end])


def test_padding_does_not_change_a_sample(tiny_model: TinyMLLM, tiny_world: TinyWorld) -> None:
    short, long = tiny_world.captions[0], tiny_world.stories[0]
    alone = tiny_model(tiny_model.collate([short], tiny_world.root)).logits[0]
    padded = tiny_model(tiny_model.collate([short, long], tiny_world.root)).logits[0]
    torch.testing.assert_close(padded[: alone.shape[0]], alone, atol=1e-5, rtol=1e-5)


def test_labels_supervise_target_text_only(tiny_model: TinyMLLM, tiny_world: TinyWorld) -> None:
    sample = tiny_world.captions[0]  # [image, target caption]
    batch = tiny_model.collate([sample], tiny_world.root)
    labels, ids = batch.labels[0], batch.input_ids[0]
    image_span, text_span = batch.spans[0][0], batch.spans[0][-1]
    assert (labels[: image_span.end] == IGNORE_INDEX).all()  # <bos> and image positions
    assert torch.equal(
        labels[text_span.start : text_span.end], ids[text_span.start : text_span.end]
    )
    assert labels[text_span.end] == tiny_world.tokenizer.eos_id


def test_cached_decoding_equals_uncached(tiny_model: TinyMLLM, tiny_world: TinyWorld) -> None:
    samples = [tiny_world.captions[0], tiny_world.stories[1], tiny_world.needles[0]]
    kwargs = {"max_new_tokens": 12, "return_logits": True}
    cached, cached_logits = tiny_model.generate_ids(samples, tiny_world.root, **kwargs)
    plain, plain_logits = tiny_model.generate_ids(
        samples, tiny_world.root, use_cache=False, **kwargs
    )
    assert cached == plain
    torch.testing.assert_close(cached_logits, plain_logits, atol=1e-4, rtol=1e-4)


def test_generation_logits_equal_a_full_forward(
    tiny_model: TinyMLLM, tiny_world: TinyWorld
) -> None:
    """Left-padded cached generation = right-padded training forward on prompt + new tokens."""
    samples = [tiny_world.captions[1], tiny_world.stories[2]]
    new, logits = tiny_model.generate_ids(
        samples, tiny_world.root, max_new_tokens=6, return_logits=True
    )
    for row, sample in enumerate(samples):
        prompt = tiny_model.collate([prompt_of(sample)], tiny_world.root)
        length = int(prompt.lengths[0])
        ids = torch.cat([prompt.input_ids[0], torch.tensor(new[row][:-1], dtype=torch.long)])
        prompt.input_ids = ids[None]
        prompt.attention_mask = torch.ones_like(prompt.input_ids, dtype=torch.bool)
        full = tiny_model(prompt).logits[0, length - 1 :]
        steps = len(new[row])
        torch.testing.assert_close(logits[row, :steps], full[:steps], atol=1e-4, rtol=1e-4)


def test_sampling_is_reproducible_with_a_seed(tiny_model: TinyMLLM, tiny_world: TinyWorld) -> None:
    samples = tiny_world.captions[:3]
    kwargs = {"max_new_tokens": 10, "temperature": 1.5, "top_k": 50}
    first = tiny_model.generate(samples, tiny_world.root, seed=11, **kwargs)
    again = tiny_model.generate(samples, tiny_world.root, seed=11, **kwargs)
    other = tiny_model.generate(samples, tiny_world.root, seed=12, **kwargs)
    assert first == again
    assert first != other  # untrained model, 10 tokens at temperature 1.5: never all equal


def test_score_matches_a_manual_sum_of_token_log_probabilities(
    tiny_model: TinyMLLM, tiny_world: TinyWorld
) -> None:
    samples = [tiny_world.captions[0], tiny_world.captions[1]]
    scores = tiny_model.score(samples, tiny_world.root)
    for row, sample in enumerate(samples):
        batch = tiny_model.collate([sample], tiny_world.root)
        logits = tiny_model(batch).logits[0].double()
        total = 0.0
        for t in range(1, int(batch.lengths[0])):
            label = int(batch.labels[0, t])
            if label != IGNORE_INDEX:
                total += float(torch.log_softmax(logits[t - 1], dim=-1)[label].detach())
        assert scores[row].item() == pytest.approx(total, abs=1e-4)


def test_frozen_parameters_are_bit_identical_after_optimiser_steps(
    tiny_world: TinyWorld,
) -> None:
    model = TinyMLLM(tiny_world.tokenizer, vision="frozen_grid", **TINY).train()
    groups = model.parameter_groups()
    assert groups["frozen"] and groups["trainable"]
    frozen_before = copy.deepcopy(model.vision.state_dict())  # includes batch-norm buffers
    trainable_before = [p.detach().clone() for p in groups["trainable"]]
    optimiser = torch.optim.AdamW(groups["trainable"], lr=1e-2, weight_decay=0.1)
    batch = model.collate(tiny_world.captions[:4], tiny_world.root)
    for _ in range(3):
        out = model(batch)
        loss = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten()
        )
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    for name, tensor in model.vision.state_dict().items():
        assert torch.equal(tensor, frozen_before[name]), name
    changed = [
        not torch.equal(p, q) for p, q in zip(groups["trainable"], trainable_before, strict=True)
    ]
    assert all(changed)


def test_a_missing_image_names_the_file(tiny_model: TinyMLLM, tiny_world: TinyWorld) -> None:
    sample = Sample("s", [Segment.image_("images/none.png"), Segment.text_("A cat.", "target")])
    batch = tiny_model.collate([sample], tiny_world.root)
    with pytest.raises(DataError, match=r"none\.png"):
        tiny_model(batch)


def test_a_path_escaping_the_root_is_refused(tiny_model: TinyMLLM, tiny_world: TinyWorld) -> None:
    sample = Sample("s", [Segment.image_("../x.png"), Segment.text_("A cat.", "target")])
    with pytest.raises(DataError, match="outside the dataset root"):
        tiny_model.collate([sample], tiny_world.root)


def test_prompt_of_cuts_at_the_first_target() -> None:
    sample = Sample(
        "q",
        [Segment.image_("a.png"), Segment.text_("Q?"), Segment.text_("A.", "target")],
    )
    assert [s.text or s.image for s in prompt_of(sample).segments] == ["a.png", "Q?"]
    with pytest.raises(ValueError, match="starts with a target"):
        prompt_of(Sample("t", [Segment.text_("A.", "target")]))


def test_a_rewritten_image_file_is_encoded_again(tiny_world: TinyWorld, tmp_path: Path) -> None:
    import os
    import shutil

    model = TinyMLLM(tiny_world.tokenizer, vision="frozen_grid", **TINY).eval()
    first, second = (tiny_world.root / s.images[0] for s in tiny_world.captions[:2])
    shutil.copy(first, tmp_path / "x.png")
    sample = Sample("x", [Segment.image_("x.png")])
    before = model(model.collate([sample], tmp_path)).hidden
    shutil.copy(second, tmp_path / "x.png")
    os.utime(tmp_path / "x.png", ns=(1, 1))  # a new mtime even within the clock's resolution
    after = model(model.collate([sample], tmp_path)).hidden
    assert not torch.allclose(before, after)
