"""A tiny world and tiny MLLMs of both vision paths, built once per test session (per worker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.data.world import generate_world
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer

TINY = {"width": 32, "layers": 2, "heads": 2, "max_positions": 256}
"""Decoder size for interface tests (hidden 32, 2 layers, as STYLE.md point 9 says)."""


@dataclass
class TinyWorld:
    root: Path
    captions: list[Sample]
    stories: list[Sample]
    needles: list[Sample]
    tokenizer: Tokenizer


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    root = tmp_path_factory.mktemp("models") / "world"
    generate_world(root, seed=3, train_per_task=24, val_per_task=4, test_per_task=4)

    def read(task: str) -> list[Sample]:
        return read_samples(root / task / "train.jsonl", root)

    captions = read("caption")
    texts = [segment.text for s in captions for segment in s.segments if segment.text]
    tokenizer = Tokenizer.train(texts, vocab_size=400)
    return TinyWorld(root, captions, read("story"), read("needle"), tokenizer)


@pytest.fixture(params=["frozen_grid", "vit"])
def tiny_model(request: pytest.FixtureRequest, tiny_world: TinyWorld) -> TinyMLLM:
    return TinyMLLM(tiny_world.tokenizer, vision=request.param, **TINY).eval()
