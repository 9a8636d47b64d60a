"""A small world and a tiny-model config for loop tests (built once per worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sugar.config import SugarConfig, load_config
from sugar.data.world import generate_world


@pytest.fixture(scope="session")
def loop_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loop") / "world"
    generate_world(root, seed=5, train_per_task=24, val_per_task=8, test_per_task=2)
    return root


def tiny_config(world: Path, run_dir: Path, *overrides: str) -> SugarConfig:
    """A run that takes about a second: hidden 32, 2 layers, batches of 6."""
    return load_config(
        None,
        [
            f"data.root={world}",
            f"run.output_dir={run_dir}",
            "model.width=32",
            "model.layers=2",
            "model.heads=2",
            "model.vocab_size=300",
            "model.feature_cache=null",
            "train.steps=6",
            "train.batch_size=6",
            "train.log_every=1",
            "train.eval_every=3",
            "train.checkpoint_every=3",
            "train.eval_samples=12",
            "train.select_metric=val_t2i_r1",
            *overrides,
        ],
    )
