"""The feed-forward site: hooks that change nothing until a memory acts, keys and residual
sums equal to a naive reference, position-wise effects at the last layer, clean removal."""

from __future__ import annotations

import torch

from sugar.edit.site import FeedForwardSite, answer_positions
from sugar.models.tiny import TinyMLLM
from tests.edit.conftest import EditWorld


def _logits(model: TinyMLLM, samples, root) -> torch.Tensor:
    with torch.no_grad():
        return model(model.collate(samples, root)).logits


def test_site_without_memories_changes_nothing(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    samples = [edit.target() for edit in edit_world.edits[:3]]
    before = _logits(tiny, samples, edit_world.root)
    site = FeedForwardSite(tiny, -1)
    assert torch.equal(_logits(tiny, samples, edit_world.root), before)
    site.add("zero", lambda keys: torch.zeros_like(keys))
    assert torch.allclose(_logits(tiny, samples, edit_world.root), before)
    site.close()
    assert torch.equal(_logits(tiny, samples, edit_world.root), before)


def test_capture_matches_a_naive_reference(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    samples = [edit.target() for edit in edit_world.edits[:2]]
    seen: dict[str, torch.Tensor] = {}
    block = tiny.blocks[-1]
    handles = [
        block.mlp.register_forward_hook(lambda m, a, o: seen.update(key=a[0], out=o)),
        block.register_forward_pre_hook(lambda m, a: seen.update(x=a[0])),
    ]
    with torch.no_grad():
        tiny(tiny.collate(samples, edit_world.root))
    for handle in handles:
        handle.remove()
    capture = FeedForwardSite(tiny, -1).capture(samples, edit_world.root)
    assert torch.allclose(capture.keys, seen["key"])
    # the residual sum is the block's output: its input plus attention plus the MLP's output
    attention_free = capture.residual - seen["out"]
    x = seen["x"]
    assert torch.allclose(block.norm2(attention_free), seen["key"], atol=1e-5)
    assert attention_free.shape == x.shape


def test_a_delta_at_one_position_moves_only_that_position(
    edit_world: EditWorld, tiny: TinyMLLM
) -> None:
    samples = [edit_world.edits[1].target()]
    before = _logits(tiny, samples, edit_world.root)
    site = FeedForwardSite(tiny, -1)
    batch = tiny.collate(samples, edit_world.root)
    position = answer_positions(batch)[0][0]

    def bump(keys: torch.Tensor) -> torch.Tensor:
        delta = torch.zeros_like(keys)
        delta[:, position] = 3.0
        return delta

    site.add("bump", bump)
    after = _logits(tiny, samples, edit_world.root)
    changed = (after - before).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [position]


def test_answer_positions_predict_the_target(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    edit = edit_world.edits[1]
    batch = tiny.collate([edit.target()], edit_world.root)
    positions = answer_positions(batch)[0]
    answer = edit_world.tokenizer.encode(edit.answer)
    assert batch.labels[0, [p + 1 for p in positions]].tolist()[:-1] == answer
    assert len(positions) == len(answer) + 1  # and <eos>
