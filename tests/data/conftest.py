"""Fixtures for the data tests: tiny PNG files written with Pillow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def make_png() -> Callable[[Path], Path]:
    """Write a 4x4 red PNG at the given path (parents created) and return the path."""

    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (255, 0, 0)).save(path)
        return path

    return make
