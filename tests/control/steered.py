"""Bundles with a control branch over the rag tests' tiny bundle, and a knowledge index of each
(a bundle with a branch has its own identity). Import the ``steered`` fixture where needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import sugar
from sugar.control.branch import ControlBranch
from sugar.index import build_index
from sugar.models.bundle import save_bundle
from tests.rag.conftest import RagWorld, rag_world

__all__ = ["Steered", "rag_world", "steered"]


@dataclass
class Steered:
    world: RagWorld
    zero: Path
    """A bundle whose branch is as initialised (zero joins): steering changes nothing."""
    moved: Path
    """A bundle whose joins are random: steering moves the query vectors."""

    def index(self, bundle: Path) -> Path:
        """The knowledge index built with ``bundle``."""
        return bundle.with_name(bundle.name + "-kb")


@pytest.fixture(scope="session")
def steered(rag_world: RagWorld, tmp_path_factory: pytest.TempPathFactory) -> Steered:
    base = tmp_path_factory.mktemp("steered")
    projector = ({**rag_world.projector.spec, "image_pool": "mean"},
                 rag_world.projector.state_dict())  # fmt: skip
    torch.manual_seed(1)
    zero = ControlBranch(rag_world.model.hidden_size, joins=2, layers=1, heads=2)
    moved = ControlBranch(rag_world.model.hidden_size, joins=2, layers=1, heads=2)
    moved.load_state_dict(zero.state_dict())
    for parameter in moved.zero.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    for name, branch in (("zero", zero), ("moved", moved)):
        extras = {"projector": projector, "control": (dict(branch.spec), branch.state_dict())}
        save_bundle(base / name, rag_world.model, extras=extras)
    for bundle in (base / "zero", base / "moved", rag_world.bundle):
        model = sugar.load(bundle)
        index = build_index("exact", model.projector.dim, model.identity)
        vectors = model.embed(rag_world.kb_items, root=rag_world.root)
        index.add([s.id for s in rag_world.kb_items], vectors,
                  [s.to_dict() for s in rag_world.kb_items])  # fmt: skip
        index.save(bundle.with_name(bundle.name + "-kb"))
    return Steered(rag_world, base / "zero", base / "moved")
