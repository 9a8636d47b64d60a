"""``sugar eval`` on a dataset that holds some tasks only: the default task list skips the
absent ones, and hard negatives on captions that state none (a line each, listed in the report);
a named absent or unscorable task, or a root where no task can run, is an error naming the
files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sugar.cli import app
from sugar.cli.evaluation import DEFAULT_TASKS
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.data.world import generate_world
from sugar.models.bundle import save_bundle
from sugar.models.prefix import RetrievalProjector
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def caption_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a COCO-style caption-only dataset: ``caption/test.jsonl`` alone, 3 images x 2 captions,
    one sample per caption; a tiny bundle with a retrieval projector)."""
    base = tmp_path_factory.mktemp("caption-only")
    world = base / "world"
    generate_world(world, seed=3, train_per_task=12, val_per_task=2, test_per_task=3)
    source = read_samples(world / "caption" / "test.jsonl", world)
    data = base / "coco"
    (data / "caption").mkdir(parents=True)
    lines = []
    for i, s in enumerate(source):
        image = data / f"{i}.png"
        image.write_bytes((world / str(s.segments[0].image)).read_bytes())
        for n, caption in enumerate((s.segments[1].text or "", f"Picture number {i}.")):
            pair = [Segment.image_(image.name), Segment.text_(caption, "target")]
            lines.append(Sample(f"{i}-{n}", pair).to_json())
    (data / "caption" / "test.jsonl").write_text("\n".join(lines) + "\n")
    texts = [x.text for s in read_samples(world / "caption" / "train.jsonl", world)
             for x in s.segments if x.text]  # fmt: skip
    torch.manual_seed(0)
    model = TinyMLLM(Tokenizer.train(texts, vocab_size=300), width=32, layers=2, heads=2,
                     max_positions=256).eval()  # fmt: skip
    projector = RetrievalProjector(model.hidden_size, 8).eval()
    spec = {**projector.spec, "image_pool": "mean"}
    save_bundle(
        base / "runA" / "model", model, extras={"projector": (spec, projector.state_dict())}
    )
    return data, base / "runA" / "model"


def test_default_tasks_run_what_a_caption_only_set_holds(
    caption_only: tuple[Path, Path], tmp_path: Path
) -> None:
    data, bundle = caption_only
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["eval", "--model", str(bundle), "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    absent = {"winoground", "story_retrieval", "needle", "vqa", "pope", "kb_qa"}
    for task in absent:
        folder = {"story_retrieval": "story", "kb_qa": "kb"}.get(task, task)
        line = f"[eval] skipped {task}: {data / folder / 'test.jsonl'}"
        assert line in result.output
    assert f"{data / 'kb_items' / 'test.jsonl'} absent (task not run)" in result.output
    captions_file = data / "caption" / "test.jsonl"
    assert (
        f"[eval] skipped hard_negatives: no sample of {captions_file} has meta.negatives "
        "(sugar mine adds them) (task not run)"
    ) in result.output
    report = json.loads((out / "report.json").read_text())
    ran = report["results"]["runA"]
    assert set(ran) == set(DEFAULT_TASKS) - absent - {"hard_negatives"}
    assert set(ran) == {"caption_retrieval", "grounding"}
    captions = ran["caption_retrieval"]
    assert isinstance(captions["t2i_r1"], float) and captions["items"] == 6
    assert len(captions["per_item"]["t2i_r1"]) == 6  # per caption
    assert len(captions["per_item"]["i2t_r1"]) == 3  # per distinct image
    assert set(report["skipped"]) == absent | {"hard_negatives"}
    markdown = (out / "report.md").read_text()
    assert "Not run: vqa (" in markdown and "caption t2i R@1" in markdown
    assert "Not run: hard_negatives (no sample of" in markdown
    assert "VQA EM" not in markdown  # no column for a task no variant ran
    assert "relation swap" not in markdown  # nor "n/a" columns for negatives the data lacks
    assert not (out / "needle_by_position.png").exists()  # no needle figures: no empty plot
    assert "not run (no data for them): hard_negatives, winoground, story_retrieval" in (
        result.output
    )
    assert sorted(p.name for p in (out / "mteb" / "runA").glob("*/*.json")) == [
        "caption_retrieval.json", "grounding.json", "model_meta.json",
    ]  # fmt: skip


def test_hard_negatives_run_once_a_caption_states_one(
    caption_only: tuple[Path, Path], tmp_path: Path
) -> None:
    """Named on captions without ``meta.negatives`` it is an error naming the file, before any
    task runs; one stated (or mined) negative is enough for the default list to run it."""
    source, bundle = caption_only
    data = tmp_path / "data"
    (data / "caption").mkdir(parents=True)
    for image in source.glob("*.png"):
        (data / image.name).write_bytes(image.read_bytes())
    captions = data / "caption" / "test.jsonl"
    samples = read_samples(source / "caption" / "test.jsonl", source)
    captions.write_text("".join(s.to_json() + "\n" for s in samples))
    named = ["eval", "--model", str(bundle), "--data", str(data), "--tasks",
             "caption_retrieval,hard_negatives", "--out", str(tmp_path / "named")]  # fmt: skip
    result = CliRunner().invoke(app, named)
    assert result.exit_code == 2
    assert f"{captions}: no sample has meta.negatives, which hard_negatives scores" in (
        result.output
    )
    assert not (tmp_path / "named").exists()  # nothing ran
    negative = {"kind": "mined", "caption": samples[1].segments[1].text}
    samples[0].meta["negatives"] = [negative]
    captions.write_text("".join(s.to_json() + "\n" for s in samples))
    out = tmp_path / "default"
    result = CliRunner().invoke(
        app, ["eval", "--model", str(bundle), "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    scored = json.loads((out / "report.json").read_text())["results"]["runA"]["hard_negatives"]
    assert scored["count_mined"] == 1.0 and isinstance(scored["emb_mined"], float)


def test_a_named_task_whose_file_is_absent_is_an_error(
    caption_only: tuple[Path, Path], tmp_path: Path
) -> None:
    data, bundle = caption_only
    result = CliRunner().invoke(
        app,
        ["eval", "--model", str(bundle), "--data", str(data), "--tasks", "caption_retrieval,vqa",
         "--out", str(tmp_path / "report")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert f"no such file: {data / 'vqa' / 'test.jsonl'} (task 'vqa')" in result.output
    assert not (tmp_path / "report").exists()  # nothing ran


def test_a_root_where_no_task_can_run_is_an_error(
    caption_only: tuple[Path, Path], tmp_path: Path
) -> None:
    _, bundle = caption_only
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        app, ["eval", "--model", str(bundle), "--data", str(empty), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert f"{empty}: no task's data is there; looked for {empty / 'caption' / 'test.jsonl'}" in (
        result.output
    )
    assert str(empty / "kb_items" / "test.jsonl") in result.output


def test_the_default_list_is_every_task_but_instructed() -> None:
    """Spelt out in the CLI, which must not import the tasks at start-up (0.6 s on every
    command): kept in step with sugar.eval.tasks.TASKS here. ``instructed`` needs a bundle's
    control branch."""
    from sugar.eval.tasks import TASKS

    assert tuple(task for task in TASKS if task != "instructed") == DEFAULT_TASKS
