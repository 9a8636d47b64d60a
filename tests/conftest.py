"""Suite-wide settings: one torch thread per worker (2-core machines; see CONTRIBUTING.md)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SUGAR_TORCH_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same torch seed, so failures reproduce."""
    torch.manual_seed(0)
