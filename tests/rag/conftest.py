"""A tiny world and a tiny bundle with a retrieval projector, built once per worker (< 1 s)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.data.world import generate_world
from sugar.models.bundle import save_bundle
from sugar.models.prefix import RetrievalProjector
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer

TINY = {"width": 32, "layers": 2, "heads": 2, "max_positions": 256, "feature_cache": None}
"""Hidden 32, 2 layers (STYLE.md point 9); vision features kept in memory only."""


@dataclass
class RagWorld:
    root: Path
    captions: list[Sample]
    kb: list[Sample]
    """Training kb questions without the fact they show: ``[image?, question, answer]``."""
    kb_items: list[Sample]
    model: TinyMLLM
    projector: RetrievalProjector
    bundle: Path
    """A bundle of ``model`` with ``projector`` (``image_pool="mean"``)."""
    plain_bundle: Path
    """The same backbone without a projector (a generative-only bundle)."""


@pytest.fixture(scope="session")
def rag_world(tmp_path_factory: pytest.TempPathFactory) -> RagWorld:
    base = tmp_path_factory.mktemp("rag")
    root = base / "world"
    generate_world(root, seed=4, train_per_task=12, val_per_task=2, test_per_task=2)

    def read(task: str) -> list[Sample]:
        return read_samples(root / task / "train.jsonl", root)

    captions, kb_items = read("caption"), read("kb_items")
    # the questions alone: a training kb sample shows its fact first ([payload, image?, question,
    # answer]); these tests ask the question and retrieve the fact
    kb = [Sample(s.id, s.segments[1:], s.task, s.meta) for s in read("kb")]
    texts = [s.text for x in captions + kb + kb_items for s in x.segments if s.text]
    tokenizer = Tokenizer.train(texts, vocab_size=300)
    torch.manual_seed(0)
    model = TinyMLLM(tokenizer, **TINY).eval()
    projector = RetrievalProjector(model.hidden_size, 16).eval()
    spec = {**projector.spec, "image_pool": "mean"}
    save_bundle(base / "bundle", model, extras={"projector": (spec, projector.state_dict())})
    save_bundle(base / "plain", model)
    return RagWorld(root, captions, kb, kb_items, model, projector, base / "bundle", base / "plain")
