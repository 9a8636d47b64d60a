"""The small world, generated once per test session (once per xdist worker)."""

from __future__ import annotations

import pytest

from sugar.data.world import generate_world
from tests.world.helpers import SEED, SMALL, World


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world") / "w"
    manifest = generate_world(root, seed=SEED, **SMALL)
    return World(root, manifest)
