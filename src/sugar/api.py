"""``sugar.load(dir)``: a trained model bundle as one object that generates and scores.

Usage::

    import sugar
    model = sugar.load("runs/demo/model")
    model.generate([sample], root="runs/world")   # ['A red square is left of a blue circle.']
    model.score([sample], root="runs/world")      # tensor([-7.31])

Later issues add ``embed``, ``search`` and ``ask`` on the same object (same weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from sugar.data.schema import Sample
from sugar.models.base import MLLM
from sugar.models.bundle import LoadedBundle, load_bundle

__all__ = ["SugarModel", "load"]


class SugarModel:
    """A loaded bundle: the backbone plus its extra modules, in eval mode."""

    def __init__(self, bundle: LoadedBundle) -> None:
        self.bundle = bundle
        self.backbone: MLLM = bundle.model.eval()

    @property
    def identity(self) -> str:
        """The bundle identity (``model.json``); indexes record it."""
        return self.bundle.identity

    @property
    def directory(self) -> Path:
        return self.bundle.directory

    def generate(
        self,
        samples: Sequence[Sample],
        root: str | Path = ".",
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """Continue each sample's prompt (its segments before the first target); image paths
        are relative to ``root``. Greedy at ``temperature=0``; seeded sampling otherwise."""
        return self.backbone.generate(
            samples, root, max_new_tokens=max_new_tokens, temperature=temperature,
            top_k=top_k, seed=seed,
        )  # fmt: skip

    def score(self, samples: Sequence[Sample], root: str | Path = ".") -> Tensor:
        """Log-likelihood of each sample's target text given the rest. # (B,)"""
        return self.backbone.score(samples, root)

    def __repr__(self) -> str:
        return (
            f"SugarModel(family={self.backbone.family!r}, directory={str(self.directory)!r}, "
            f"identity={self.identity[:12]})"
        )


def load(directory: str | Path) -> SugarModel:
    """Load the bundle at ``directory`` (verified against its recorded hashes)."""
    return SugarModel(load_bundle(directory))
