"""``val_answer_accuracy``: validation VQA / POPE answers scored as ``sugar eval`` reads them,
against hand-counted answers, and selectable as ``train.select_metric`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from sugar.cli import app
from sugar.data.schema import Sample, Segment
from sugar.eval.validation import answer_accuracy
from sugar.models.base import MLLM
from tests.cli.test_train_cli import BASE_SMOKE


class Scripted:
    """Answers from a script, in order; records the batches it was asked."""

    def __init__(self, answers: list[str]) -> None:
        self.answers: list[str] = list(answers)
        self.batches: list[int] = []

    def generate(self, samples: list[Sample], root: Any, max_new_tokens: int = 32) -> list[str]:
        self.batches.append(len(samples))
        out, self.answers = self.answers[: len(samples)], self.answers[len(samples) :]
        return out


def probe(task: str, answer: str) -> Sample:
    segments = [Segment.image_("img.png"), Segment.text_("question?"), Segment.text_(answer)]
    return Sample(f"{task}-{answer}", segments, task, {"answer": answer})


def test_answers_are_read_as_sugar_eval_reads_them() -> None:
    samples = [
        probe("pope", "yes"), probe("pope", "no"), probe("pope", "yes"), probe("pope", "no"),
        probe("vqa", "red"), probe("vqa", "two"), probe("vqa", "left"),
    ]  # fmt: skip
    model = Scripted([
        "Yes, there is.", "No", "no.", "yes",  # POPE reference rule: right, right, wrong, wrong
        "Red.", "three", " LEFT ",  # normalised exact match: right, wrong, right
    ])  # fmt: skip
    accuracy = answer_accuracy(cast(MLLM, model), samples, Path("."), batch_size=3)
    assert accuracy == pytest.approx(4 / 7)
    assert model.batches == [3, 3, 1]
    with pytest.raises(ValueError, match="no VQA or POPE samples"):
        answer_accuracy(cast(MLLM, model), [], Path("."), batch_size=3)


def test_training_logs_and_selects_by_answer_accuracy(smoke_world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train", *BASE_SMOKE, f"data.root={smoke_world}", f"run.output_dir={run}",
        "train.steps=4", "train.eval_every=2", "model.feature_cache=null",
        "data.val=[caption/val.jsonl,pope/val.jsonl,vqa/val.jsonl]", "train.eval_samples=40",
        "train.select_metric=val_answer_accuracy",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    values = [x["val_answer_accuracy"] for x in log if "val_answer_accuracy" in x]
    assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert (run / "best" / "model.json").is_file()
