"""Every editor on a tiny model: edits take, fact vectors reproduce the in-context hidden
states, removal restores the unedited outputs, bundles round-trip the edits."""

from __future__ import annotations

import copy

import pytest
import torch

from sugar.data.prompt import with_references
from sugar.edit.base import EDITORS, build_editor
from sugar.edit.evaluate import answer_argmax, sequential_edit_scores
from sugar.edit.scope import train_scope
from sugar.edit.store import load_editor, save_edited
from sugar.models.bundle import load_bundle, read_manifest, save_bundle
from sugar.models.tiny import TinyMLLM
from tests.edit.conftest import EditWorld

FAST = {
    "ft": {"steps": 60, "lr": 3e-3},
    "context": {},
    "patcher": {"steps": 80, "lr": 0.05, "neurons": 4, "activation_weight": 1.0},
    "memory": {"threshold": 0.9},
    "unike": {"steps": 60, "lr": 0.2, "scope_steps": 20, "threshold": 0.9},
}


def _probe_logits(editor, edits) -> torch.Tensor:
    samples = [e.target(p) for e in edits for p in [e.prompt, *e.probes.values()]]
    with torch.no_grad():
        capture = editor.site.capture(editor.rewrite(samples), editor.root)
    return capture.logits


@pytest.mark.parametrize("method", sorted(FAST))
def test_remove_restores_the_unedited_outputs(
    method: str, edit_world: EditWorld, tiny: TinyMLLM
) -> None:
    editor = build_editor(method, tiny, edit_world.root, edit_world.support, **FAST[method])
    edits = edit_world.edits[:2]
    before = _probe_logits(editor, edits)
    for edit in edits:
        editor.add(edit)
    if method != "context":
        assert not torch.allclose(_probe_logits(editor, edits), before)
    for edit in reversed(edits):
        editor.remove(edit.id)
    assert torch.allclose(_probe_logits(editor, edits), before, atol=1e-5)
    with pytest.raises(ValueError, match="no edit 'nope'"):
        editor.remove("nope")


@pytest.mark.parametrize("method", ["ft", "patcher", "unike"])
def test_trained_edits_take(method: str, edit_world: EditWorld, tiny: TinyMLLM) -> None:
    editor = build_editor(method, tiny, edit_world.root, edit_world.support, **FAST[method])
    edit = edit_world.edits[1]
    ((argmax, labels),) = answer_argmax(editor, [edit.target()])
    assert not torch.equal(argmax, labels)  # the random model does not know it yet
    editor.add(edit)
    ((argmax, labels),) = answer_argmax(editor, [edit.target()])
    assert torch.equal(argmax, labels)


def test_fact_vectors_reproduce_the_in_context_states(
    edit_world: EditWorld, tiny: TinyMLLM
) -> None:
    """At the last layer, the memory's value makes the edit prompt's answer logits exactly
    those of the prompt with its payload shown (the naive reference)."""
    editor = build_editor("memory", tiny, edit_world.root, threshold=0.999)
    edit = edit_world.edits[1]
    shown = editor.site.capture([with_references(edit.target(), edit.payload)], edit_world.root)
    editor.add(edit)
    edited = editor.site.capture([edit.target()], edit_world.root)
    from sugar.edit.site import answer_positions

    a, b = answer_positions(shown.batch)[0], answer_positions(edited.batch)[0]
    assert torch.allclose(edited.logits[0, b], shown.logits[0, a], atol=1e-4)


def test_sequential_scores_have_every_metric(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    editor = build_editor("memory", tiny, edit_world.root, threshold=0.9)
    scores = sequential_edit_scores(editor, edit_world.edits, (1, 4, 100))
    assert set(scores) == {"1", "4", "seconds_per_edit", "max_seconds_per_edit",
                           "seconds_per_removal", "restored"}  # fmt: skip
    assert scores["restored"] == 100.0
    # the fact vector makes the edit prompt answer as the prompt with the fact shown does
    plain = build_editor("memory", copy.deepcopy(tiny), edit_world.root)
    edit = edit_world.edits[0]
    ((argmax, labels),) = answer_argmax(plain, [with_references(edit.target(), edit.payload)])
    assert scores["1"]["reliability"] == 100.0 * bool(torch.equal(argmax, labels))
    assert set(scores["4"]) == {"reliability", "text_generality", "image_generality",
                                "text_locality", "image_locality", "mean"}  # fmt: skip
    assert all(0.0 <= v <= 100.0 for v in scores["4"].values())


@pytest.mark.parametrize("method", ["ft", "patcher", "unike", "context"])
def test_bundle_round_trip_and_removal(
    method: str, edit_world: EditWorld, tiny: TinyMLLM, tmp_path
) -> None:
    save_bundle(tmp_path / "base", tiny)
    bundle = load_bundle(tmp_path / "base")
    editor = build_editor(method, bundle.model, edit_world.root, edit_world.support,
                          **FAST[method])  # fmt: skip
    edits = edit_world.edits[:2]
    unedited = _probe_logits(editor, edits)
    for edit in edits:
        editor.add(edit)
    expected = _probe_logits(editor, edits)
    save_edited(tmp_path / "edited", bundle, editor)
    manifest = read_manifest(tmp_path / "edited")
    assert [e["id"] for e in manifest["extras"]["edits"]["edits"]] == [e.id for e in edits]
    loaded = load_editor(load_bundle(tmp_path / "edited"), edit_world.root)
    assert loaded is not None and loaded.method == method
    assert torch.allclose(_probe_logits(loaded, edits), expected, atol=1e-5)
    loaded.remove(edits[1].id)
    loaded.remove(edits[0].id)
    assert torch.allclose(_probe_logits(loaded, edits), unedited, atol=1e-5)


def test_every_method_is_registered(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    build_editor("memory", tiny, edit_world.root)
    assert sorted(EDITORS) == ["context", "ft", "memory", "patcher", "unike"]
    with pytest.raises(ValueError, match="unknown edit method 'rome'"):
        build_editor("rome", tiny, edit_world.root)
    with pytest.raises(ValueError, match="scope_edits"):
        build_editor("unike", copy.deepcopy(tiny), edit_world.root)


def test_scope_space_pulls_rephrasings_together() -> None:
    """Synthetic keys: each group is a random centre plus a shared nuisance direction whose
    size varies; negatives share the nuisance but not the centre. After training, a group's
    two members are closer than a member and its negative (a random projection is not)."""
    generator = torch.Generator().manual_seed(0)
    width, groups = 16, 40
    nuisance = torch.randn(width, generator=generator) * 4

    def member(centre: torch.Tensor) -> torch.Tensor:
        scale = torch.rand(1, generator=generator) * 2
        return (centre + scale * nuisance + 0.1 * torch.randn(width, generator=generator))[None]

    data = []
    for _ in range(groups):
        centre = torch.randn(width, generator=generator)
        other = torch.randn(width, generator=generator)
        data.append(([member(centre), member(centre)], [member(other)]))
    space = train_scope(data, width, dim=8, steps=200, lr=1e-2, batch_edits=16)
    with torch.no_grad():
        wins = 0
        for (a, b), (negative,) in data:
            va, vb, vn = (torch.nn.functional.normalize(space(x), dim=-1) for x in (a, b, negative))
            wins += int((va @ vb.T) > (va @ vn.T))
    assert wins >= 0.9 * groups
