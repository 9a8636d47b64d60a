"""Suite-wide settings: one torch thread per worker (2-core machines; see CONTRIBUTING.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SUGAR_TORCH_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same torch seed, so failures reproduce."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def learning_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A world big enough to learn from (500 train / 100 val / 100 test per task), built once
    per worker (about 10 s) and shared by the slow lane's learning tests."""
    from sugar.data.world import generate_world

    root = tmp_path_factory.mktemp("learning") / "world"
    generate_world(root, seed=1, train_per_task=500, val_per_task=100, test_per_task=100)
    return root


from tests.teacher_fixtures import (  # noqa: E402  (session fixtures of the teacher tests)
    encoders,
    teacher_world,
    tiny_captions,
    trained_head,
)

__all__ = ["encoders", "teacher_world", "tiny_captions", "trained_head"]
