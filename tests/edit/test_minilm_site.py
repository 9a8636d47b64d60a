"""The site on the built-in MiniLM trunk (post-norm BertLayer): injection equals the naive
formula, and the optimisation's tail equals a full forward pass."""

from __future__ import annotations

import pytest
import torch

from sugar.edit.site import FeedForwardSite
from sugar.models.minilm import MiniLMMLLM
from tests.edit.conftest import EditWorld


@pytest.fixture(scope="module")
def minilm(edit_world: EditWorld) -> MiniLMMLLM:
    texts = [g.text or "" for e in edit_world.edits for g in e.target().segments if g.text]
    options = {"image_size": 64, "grid": 1, "feature_cache": None, "dropout": 0.0}
    return MiniLMMLLM.build(texts, {**options, "max_positions": 128}, {}).eval()


def test_injection_and_tail_match_naive_references(
    minilm: MiniLMMLLM, edit_world: EditWorld
) -> None:
    samples = [e.target() for e in edit_world.edits[:2]]
    site = FeedForwardSite(minilm, -1)
    delta = torch.randn(minilm.hidden_size) * 0.5
    site.add("shift", lambda keys: keys @ torch.zeros(keys.shape[-1], keys.shape[-1]) + delta)
    capture = site.capture(samples, edit_world.root)
    block = minilm.trunk.encoder.layer[-1]
    with torch.no_grad(), site.disabled():
        # naive: LayerNorm(dense(intermediate(h)) + h + delta), then the LM head
        naive_hidden = block.output.LayerNorm(
            block.output.dense(block.intermediate(capture.keys)) + capture.keys + delta
        )
        naive = minilm.logits(naive_hidden)
    with torch.no_grad():
        tail = site.tail(capture.keys)
    mask = capture.batch.attention_mask
    assert tail is not None
    assert torch.allclose(capture.logits[mask], naive[mask], atol=1e-4)
    assert torch.allclose(tail[mask], capture.logits[mask], atol=1e-4)
    assert torch.allclose(
        capture.residual,
        block.output.dense(block.intermediate(capture.keys)) + capture.keys,
        atol=1e-4,
    )
    assert FeedForwardSite(minilm, 0).tail(capture.keys) is None  # not the last layer


def test_an_answer_outside_the_output_vocabulary_is_refused(
    minilm: MiniLMMLLM, edit_world: EditWorld
) -> None:
    """MiniLM's corpus output vocabulary cannot say an unseen word (it would be [UNK]): the
    edit is refused with its id and answer, and a known answer is not."""
    from dataclasses import replace

    from sugar.edit.base import build_editor

    editor = build_editor("memory", minilm, edit_world.root)
    try:
        edit = edit_world.edits[1]
        strange = replace(edit, id="strange", answer="Zanzibarquux")
        with pytest.raises(ValueError, match=r"'strange'.*'Zanzibarquux'.*output vocabulary"):
            editor.add(strange)
        assert "strange" not in editor.edits and minilm.unmapped_targets == 0
        editor.add(edit)  # its answer is one of the corpus texts
        assert list(editor.edits) == [edit.id]
    finally:
        editor.close()
