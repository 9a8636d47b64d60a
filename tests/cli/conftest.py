"""Fixtures of the CLI tests: a small world for smoke-size training runs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sugar.data.world import generate_world

    root = tmp_path_factory.mktemp("cli-train") / "world"
    generate_world(root, seed=2, train_per_task=40, val_per_task=8, test_per_task=2)
    return root
