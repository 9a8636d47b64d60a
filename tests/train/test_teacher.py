"""Training the cross-modal head: determinism, the training-split rule, held-out R@5, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sugar.cli import app
from sugar.data.jsonl import read_samples
from sugar.teachers import ImageFeatures, OfflineTeacher, TextFeatures
from sugar.teachers.sensitivity import retrieval_recall, sensitivity_report
from sugar.teachers.training import train_teacher

Encoders = tuple[ImageFeatures, TextFeatures]


def _train(encoders: Encoders, data: Path, out: Path, seed: int) -> dict[str, object]:
    return train_teacher(
        data=data,
        out_dir=out,
        steps=4,
        batch_size=8,
        image_size=64,
        seed=seed,
        image_features=encoders[0],
        text_features=encoders[1],
    )


def test_training_is_deterministic_in_the_seed_and_leaves_encoders_frozen(
    encoders: Encoders, tiny_captions: Path, tmp_path: Path
) -> None:
    before = {k: v.clone() for k, v in encoders[0].encoder.state_dict().items()}
    a = _train(encoders, tiny_captions, tmp_path / "a", seed=1)
    b = _train(encoders, tiny_captions, tmp_path / "b", seed=1)
    c = _train(encoders, tiny_captions, tmp_path / "c", seed=2)
    assert a["weight_hash"] == b["weight_hash"] != c["weight_hash"]
    for name, tensor in encoders[0].encoder.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    teacher = OfflineTeacher.from_dir(
        tmp_path / "a", image_features=encoders[0], text_features=encoders[1]
    )
    assert str(a["weight_hash"])[:16] in teacher.identity


def test_samples_of_another_split_are_refused(
    encoders: Encoders, tiny_captions: Path, tmp_path: Path
) -> None:
    text = tiny_captions.read_text().replace('"split": "train"', '"split": "test"', 1)
    bad = tiny_captions.parent / "mixed.jsonl"
    bad.write_text(text)
    with pytest.raises(ValueError, match="split 'test'"):
        _train(encoders, bad, tmp_path / "x", seed=0)


def test_sensitivity_report_columns(
    encoders: Encoders, tiny_captions: Path, tmp_path: Path
) -> None:
    _train(encoders, tiny_captions, tmp_path, seed=0)
    teacher = OfflineTeacher.from_dir(
        tmp_path, image_features=encoders[0], text_features=encoders[1]
    )
    samples = read_samples(tiny_captions)
    report = sensitivity_report(teacher, samples, tiny_captions.parent)
    assert set(report) == {"wrong_colour", "relation_swap"}
    for row in report.values():
        assert row["count"] == 12 and 0 <= row["cross_accuracy"] <= 1
        assert -1 <= row["text_uni_cosine"] < 1


@pytest.mark.slow
def test_trained_head_retrieves_heldout_captions(trained_head: Path, teacher_world: Path) -> None:
    """Image -> text R@5 >= 0.8 among the 500 held-out test captions of the world."""
    teacher = OfflineTeacher.from_dir(trained_head)
    samples = read_samples(
        teacher_world / "caption" / "test.jsonl", teacher_world, check_images=False
    )
    assert len(samples) >= 500
    result = retrieval_recall(teacher, samples, teacher_world)
    assert result["R@5"] >= 0.8, result


@pytest.mark.slow
def test_cli_train_embed_resume_and_report(tiny_captions: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    head, cache = tmp_path / "head", tmp_path / "cache"
    common = [f"teacher.cache_dir={cache}", "teacher.image_size=64"]
    trained = runner.invoke(
        app,
        [
            "train-teacher",
            "--data",
            str(tiny_captions),
            "--out",
            str(head),
            "--steps",
            "3",
            *common,
        ],
    )
    assert trained.exit_code == 0, trained.output
    embed = ["teachers", "embed", "--data", str(tiny_captions), "--teacher", str(head), *common]
    first = runner.invoke(app, embed)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, embed)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout[second.stdout.index("{") :])["hit_rate"] == 1.0
    report = runner.invoke(
        app, ["teachers", "report", "--data", str(tiny_captions), "--teacher", str(head), *common]
    )
    assert report.exit_code == 0, report.output
    saved = json.loads((head / "sensitivity.json").read_text())
    assert set(saved["kinds"]) == {"wrong_colour", "relation_swap"}
    missing = runner.invoke(
        app,
        [
            "teachers",
            "report",
            "--data",
            str(tiny_captions),
            "--teacher",
            str(tmp_path / "none"),
            *common,
        ],
    )
    assert missing.exit_code == 2 and "head" in missing.output
