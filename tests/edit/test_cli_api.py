"""``sugar edit`` (apply, remove by id, errors) and ``model.edit`` on ``sugar.load``."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

import sugar
from sugar.cli import app
from sugar.eval.tasks import load_eval_model
from sugar.models.bundle import read_manifest, save_bundle
from sugar.models.tiny import TinyMLLM
from tests.edit.conftest import EditWorld


def _edits_file(edit_world: EditWorld, tmp_path, count: int):
    path = tmp_path / "edits.jsonl"
    lines = (edit_world.root / "edit" / "test.jsonl").read_text().splitlines()[:count]
    path.write_text("\n".join(lines) + "\n")
    return path


def _scores(model, edit_world: EditWorld) -> torch.Tensor:
    return model.score([e.target() for e in edit_world.edits[:3]], edit_world.root)


def test_sugar_edit_applies_and_removes_by_id(
    edit_world: EditWorld, tiny: TinyMLLM, tmp_path
) -> None:
    save_bundle(tmp_path / "base", tiny)
    edits = _edits_file(edit_world, tmp_path, 2)
    runner = CliRunner()
    common = ["--root", str(edit_world.root), "--method", "memory", "--option", "threshold=0.9"]
    result = runner.invoke(app, ["edit", "--model", str(tmp_path / "base"), "--edits",
                                 str(edits), "--out", str(tmp_path / "e1"), *common])  # fmt: skip
    assert result.exit_code == 0, result.output
    ids = [e.id for e in edit_world.edits[:2]]
    assert [r["id"] for r in read_manifest(tmp_path / "e1")["extras"]["edits"]["edits"]] == ids
    base, edited = sugar.load(tmp_path / "base"), sugar.load(tmp_path / "e1")
    assert edited.edits == ids and base.edits == []
    assert not torch.allclose(_scores(edited, edit_world), _scores(base, edit_world))
    evaluated = load_eval_model(tmp_path / "e1")  # sugar eval sees the edits too
    samples = [e.target() for e in edit_world.edits[:3]]
    assert torch.allclose(evaluated.score(samples, edit_world.root), _scores(edited, edit_world))

    result = runner.invoke(app, ["edit", "--model", str(tmp_path / "e1"), "--remove", ids[0],
                                 "--remove", ids[1], "--out", str(tmp_path / "e2")])  # fmt: skip
    assert result.exit_code == 0, result.output
    restored = sugar.load(tmp_path / "e2")
    assert restored.edits == []
    assert torch.allclose(_scores(restored, edit_world), _scores(base, edit_world), atol=1e-5)

    bad = runner.invoke(app, ["edit", "--model", str(tmp_path / "e1"), "--remove", "nope",
                              "--out", str(tmp_path / "e3")])  # fmt: skip
    assert bad.exit_code == 2 and "no edit 'nope'" in bad.output
    mixed = runner.invoke(app, ["edit", "--model", str(tmp_path / "e1"), "--edits", str(edits),
                                "--method", "ft", "--root", str(edit_world.root),
                                "--out", str(tmp_path / "e4")])  # fmt: skip
    assert mixed.exit_code == 2 and "already edited with 'memory'" in mixed.output
    nothing = runner.invoke(app, ["edit", "--model", str(tmp_path / "e1"), "--out", "x"])
    assert nothing.exit_code == 2 and "nothing to do" in nothing.output


def test_model_edit_on_sugar_load(edit_world: EditWorld, tiny: TinyMLLM, tmp_path) -> None:
    save_bundle(tmp_path / "base", tiny)
    model = sugar.load(tmp_path / "base")
    before = _scores(model, edit_world)
    edit = edit_world.edits[1]
    model.edit([edit.target()], method="unike", root=edit_world.root,
               support=edit_world.support, steps=60, lr=0.2, scope_steps=20)  # fmt: skip
    assert model.edits == [edit.id]
    assert model.generate([edit.prompt], edit_world.root, max_new_tokens=8)[0] == (
        model.backbone.decode_ids(model.backbone.tokenizer.encode(edit.answer))
    )
    model.save(tmp_path / "edited")
    reloaded = sugar.load(tmp_path / "edited")
    assert torch.allclose(_scores(reloaded, edit_world), _scores(model, edit_world), atol=1e-5)
    model.remove_edit(edit.id)
    assert torch.allclose(_scores(model, edit_world), before, atol=1e-5)


def test_sugar_data_edits_rewrites_the_same_set(edit_world: EditWorld) -> None:
    path = edit_world.root / "edit" / "test.jsonl"
    before = path.read_bytes()
    result = CliRunner().invoke(
        app, ["data", "edits", "--world", str(edit_world.root), "--count", "6"]
    )
    assert result.exit_code == 0, result.output
    assert path.read_bytes() == before


def test_sugar_edit_says_when_a_learning_editor_has_no_support(
    edit_world: EditWorld, tiny: TinyMLLM, tmp_path, monkeypatch
) -> None:
    """unike and patcher learn from support edits: when ROOT/edit/train.jsonl is absent and no
    --support is given, the command says so instead of building the editor on none silently."""
    import shutil

    import sugar.edit.base

    save_bundle(tmp_path / "base", tiny)
    root = tmp_path / "root"  # the world's images without its edit/ folder
    shutil.copytree(edit_world.root / "images", root / "images")
    edits = _edits_file(edit_world, tmp_path, 1)
    seen: list[int] = []

    def build(method, model, image_root, helpers, **options):
        seen.append(len(helpers))
        raise ValueError("stop here")

    monkeypatch.setattr(sugar.edit.base, "build_editor", build)
    result = CliRunner().invoke(app, ["edit", "--model", str(tmp_path / "base"), "--edits",
                                      str(edits), "--root", str(root), "--method", "unike",
                                      "--out", str(tmp_path / "e")])  # fmt: skip
    assert seen == [0] and result.exit_code == 2, result.output
    assert f"no support edits at {root / 'edit' / 'train.jsonl'}: unike learns from none" in (
        " ".join(result.output.split())
    )
