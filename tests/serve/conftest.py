"""A served bundle: the rag tests' tiny bundle and an index of its knowledge items, and
helpers to build request images."""

from __future__ import annotations

import base64
import importlib.util
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sugar
from sugar.api import SugarModel
from sugar.index import build_index
from tests.rag.conftest import RagWorld, rag_world

__all__ = ["rag_world"]

if importlib.util.find_spec("fastapi") is None:  # the serve extra is not installed
    collect_ignore_glob = ["test_*.py"]


@dataclass
class Served:
    world: RagWorld
    model: SugarModel
    index: Path
    """A kb index built with ``model`` (copy it before mutating)."""


@pytest.fixture(scope="session")
def served(rag_world: RagWorld, tmp_path_factory: pytest.TempPathFactory) -> Served:
    model = sugar.load(rag_world.bundle)
    index = build_index("exact", model.projector.dim, model.identity)
    vectors = model.embed(rag_world.kb_items, root=rag_world.root)
    index.add(
        [s.id for s in rag_world.kb_items], vectors, [s.to_dict() for s in rag_world.kb_items]
    )
    path = tmp_path_factory.mktemp("serve") / "kb"
    index.save(path)
    return Served(rag_world, model, path)


def own_index(served: Served, tmp_path: Path) -> Path:
    """A private copy of the served index, with its media root (the world) beside it."""
    path = tmp_path / "kb"
    shutil.copytree(served.index, path)
    return path


@pytest.fixture
def client(served: Served, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from sugar.serve.app import ServeSettings, create_app

    settings = ServeSettings(index=own_index(served, tmp_path), media=served.world.root)
    with TestClient(create_app(served.model, settings)) as client:
        yield client


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def png_url(width: int = 8, height: int = 8) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
