"""A tiny world with instructed queries and a tiny bundle with a projector, built once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from sugar.cli import app
from sugar.data.jsonl import read_samples
from sugar.data.world import generate_world
from sugar.models.bundle import save_bundle
from sugar.models.prefix import RetrievalProjector
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "control" / "control_smoke.yaml"
"""The shipped smoke config of ``sugar train-control``."""

TINY = {"width": 32, "layers": 2, "heads": 2, "max_positions": 256, "feature_cache": None}


@dataclass
class ControlWorld:
    root: Path
    model: TinyMLLM
    projector: RetrievalProjector
    bundle: Path

    def train_control(self, output_dir: Path, *extra: str) -> Result:
        """``sugar train-control`` with the smoke config over this world and bundle."""
        args = ["train-control", "-c", str(SMOKE), f"base={self.bundle}",
                f"data_root={self.root}", f"output_dir={output_dir}", *extra]  # fmt: skip
        return CliRunner().invoke(app, args)


@pytest.fixture(scope="session")
def control_world(tmp_path_factory: pytest.TempPathFactory) -> ControlWorld:
    base = tmp_path_factory.mktemp("control")
    root = base / "world"
    generate_world(root, seed=3, train_per_task=16, val_per_task=8, test_per_task=8)
    samples = read_samples(root / "caption" / "train.jsonl", root)
    texts = [s.text for x in samples for s in x.segments if s.text]
    texts += [q.meta["instruction"] for q in read_samples(root / "instructed" / "test.jsonl", root)]
    tokenizer = Tokenizer.train(texts, vocab_size=300)
    torch.manual_seed(0)
    model = TinyMLLM(tokenizer, **TINY).eval()
    projector = RetrievalProjector(model.hidden_size, 16).eval()
    spec = {**projector.spec, "image_pool": "mean"}
    save_bundle(base / "bundle", model, extras={"projector": (spec, projector.state_dict())})
    return ControlWorld(root, model, projector, base / "bundle")
