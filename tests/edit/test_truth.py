"""The truthfulness space (sugar.edit.truth): negatives by hand, the learned direction against
the planted one, and UniKE's values with the truthful direction against the naive formula."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sugar.edit.base import build_editor
from sugar.edit.records import EditRequest
from sugar.edit.truth import contradicted, train_truth, truthful_direction
from sugar.models.tiny import TinyMLLM
from tests.edit.conftest import EditWorld


def test_contradicted_swaps_in_another_answer(edit_world: EditWorld) -> None:
    prompt = edit_world.support[0].prompt

    def edit(name: str, answer: str, payload: str) -> EditRequest:
        return EditRequest(name, prompt, answer, payload)

    edits = [
        edit("a", "Oslo", "Made in Oslo."),
        edit("b", "Lima", "No answer here."),
        edit("c", "Oslo", "Made in Oslo too."),
        edit("d", "Kobe", "Made in Kobe."),
    ]
    pairs = contradicted(edits)
    assert [(i, wrong.payload) for i, wrong in pairs] == [
        (0, "Made in Kobe."), (2, "Made in Kobe too."), (3, "Made in Oslo.")
    ]  # fmt: skip
    assert all(wrong.answer == edits[i].answer and wrong.id == edits[i].id for i, wrong in pairs)


def test_truthful_direction_finds_the_planted_one() -> None:
    """Rows = random content +- a planted direction: the learned direction is (nearly) the
    planted one, as the naive mean difference of the normalised rows is."""
    generator = torch.Generator().manual_seed(0)
    width = 24
    planted = F.normalize(torch.randn(width, generator=generator), dim=0)
    content = torch.randn(200, width, generator=generator)
    positive, negative = content[:100] + 2 * planted, content[100:] - 2 * planted
    linear = train_truth(positive, negative, dim=8, steps=200, lr=1e-2)
    direction = truthful_direction(linear, positive, negative)
    naive = F.normalize(
        F.normalize(positive, dim=-1).mean(0) - F.normalize(negative, dim=-1).mean(0), dim=0
    )
    assert float(direction @ planted) > 0.8
    assert float(naive @ planted) > 0.8


def test_unike_values_add_the_truthful_direction(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    editor = build_editor("unike", tiny, edit_world.root, edit_world.support, scope_steps=10,
                          steps=5, lr=0.2, truth_strength=0.5)  # fmt: skip
    truth = editor.memory.space.truth
    assert torch.isclose(truth.norm(), torch.tensor(1.0))  # fitted on the support edits
    edit = edit_world.edits[1]
    editor.add(edit)
    _, fact = editor.memory.slots[edit.id]
    naive = (
        fact + editor.memory.corrections[edit.id] + 0.5 * fact.norm(dim=-1, keepdim=True) * truth
    )
    assert torch.allclose(editor.memory.values(), naive)
