"""``sugar eval`` also writes MTEB's result layout: a model_meta.json and one JSON per task."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sugar.cli import app
from tests.rag.conftest import RagWorld, rag_world

__all__ = ["rag_world"]


def test_eval_writes_mteb_result_files(rag_world: RagWorld, tmp_path: Path) -> None:
    import sugar

    result = CliRunner().invoke(
        app,
        ["eval", "--model", str(rag_world.bundle), "--data", str(rag_world.root),
         "--tasks", "caption_retrieval,vqa", "--limit", "2", "--out", str(tmp_path / "report")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    identity = sugar.load(rag_world.bundle).backbone.identity  # weights and tokenizer
    folder = tmp_path / "report" / "mteb" / "bundle" / identity[:12]
    assert sorted(p.name for p in folder.iterdir()) == [
        "caption_retrieval.json", "model_meta.json", "vqa.json",
    ]  # fmt: skip
    meta = json.loads((folder / "model_meta.json").read_text())
    assert meta["name"] == "bundle" and meta["revision"] == identity[:12]
    assert meta["embed_dim"] == 16 and meta["n_parameters"] > 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())["results"]["bundle"]
    task = json.loads((folder / "caption_retrieval.json").read_text())
    assert task["task_name"] == "caption_retrieval" and len(task["dataset_revision"]) == 64
    (scores,) = task["scores"]["test"]
    assert scores["main_score"] == report["caption_retrieval"]["t2i_r1"]
    assert scores["hf_subset"] == "default" and scores["languages"] == ["eng-Latn"]
    numeric = {k: v for k, v in report["caption_retrieval"].items() if isinstance(v, (int, float))}
    assert {k: scores[k] for k in numeric} == numeric
    vqa = json.loads((folder / "vqa.json").read_text())["scores"]["test"][0]
    assert vqa["main_score"] == report["vqa"]["exact_match"]
