"""A tiny world with edit sets and a tiny MLLM, built once per test session (per worker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sugar.data.jsonl import read_samples
from sugar.data.world import generate_world
from sugar.data.world.edits import build_edit_set
from sugar.edit.records import EditRequest, read_edits
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer

TINY = {"width": 32, "layers": 2, "heads": 2, "max_positions": 256, "vision": "vit"}


@dataclass
class EditWorld:
    root: Path
    edits: list[EditRequest]
    support: list[EditRequest]
    tokenizer: Tokenizer


@pytest.fixture(scope="session")
def edit_world(tmp_path_factory: pytest.TempPathFactory) -> EditWorld:
    root = tmp_path_factory.mktemp("edit") / "world"
    generate_world(root, seed=5, train_per_task=24, val_per_task=8, test_per_task=8)
    build_edit_set(root, "test", 6, locality_split="val")
    build_edit_set(root, "train", 8, locality_split="train")
    texts = [
        g.text
        for task in ("kb", "vqa", "edit")
        for split in ("train", "test")
        for s in read_samples(root / task / f"{split}.jsonl", root)
        for g in s.segments
        if g.text
    ]
    tokenizer = Tokenizer.train(texts, vocab_size=400)
    return EditWorld(
        root,
        read_edits(root / "edit" / "test.jsonl", root),
        read_edits(root / "edit" / "train.jsonl", root),
        tokenizer,
    )


@pytest.fixture
def tiny(edit_world: EditWorld) -> TinyMLLM:
    return TinyMLLM(edit_world.tokenizer, **TINY).eval()
