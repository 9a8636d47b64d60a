"""The ``bundle`` teacher family: a trained sugar bundle, frozen, as the teacher of L_d.

Any bundle with a retrieval projector (a Sugar, CAFe-style or contrastive-only run's ``model``
directory) embeds each slice alone, an image or a sentence, with :meth:`SugarModel.encode
<sugar.api.SugarModel.encode>`: the same forward pass and projector as its own retrieval. That
one vector serves as the slice's uni-modal and its cross-modal vector, so with
``structure.triple_kernel: true`` every distance comes from the same space (the Triple Kernel
then equals the cross-modal kernel).

Why: METHOD.md's L_d regresses the student onto its teacher's similarities. The offline
teacher is a head over frozen encoders trained on a few hundred pairs, and no stronger
cross-modal model installs offline; a bundle you trained, e.g. a CAFe-style fine-tune, ranks
captions far better, and this family lets a run distil from it (measured in the README, "A
stronger teacher"). With ``structure.slice_text_by: sentence`` it embeds each *sentence* alone,
which a bundle trained on whole captions may do poorly.

The teacher is loaded once per process, kept in evaluation mode and never trained (its vectors
come from a ``torch.no_grad`` pass); its :attr:`~BundleTeacher.identity` names the bundle's
identity (a hash of its weights, ``model.json``), so cached vectors of another bundle are never
served.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from sugar.teachers.base import register_teacher

__all__ = ["BundleTeacher", "build_bundle_teacher", "bundle_directory"]


class BundleTeacher:
    """A :class:`~sugar.teachers.Teacher` from a loaded sugar bundle (module docstring)."""

    def __init__(self, model: Any, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        try:
            dim = model.projector.dim
        except ValueError as error:
            raise ValueError(
                f"teacher bundle {model.directory}: it has no trained retrieval projector, so it "
                "cannot embed (train it with an embedding objective: Sugar, CAFe-style or "
                f"contrastive-only): {error}"
            ) from error
        self.model = model
        self.batch_size = batch_size
        self.image_dim = self.text_dim = self.cross_dim = int(dim)

    @property
    def identity(self) -> str:
        return f"bundle[{self.model.identity}]"

    def _encode(self, inputs: Sequence[Any]) -> tuple[Tensor, Tensor]:
        if not inputs:
            empty = torch.zeros(0, self.cross_dim)
            return empty, empty
        with torch.no_grad():
            vectors = self.model.encode(
                list(inputs), batch_size=self.batch_size, convert_to_tensor=True
            )
        vectors = vectors.float().cpu()
        return vectors, vectors

    def encode_images(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor]:
        return self._encode([{"image": image} for image in images])

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return self._encode(texts)


def bundle_directory(path: str | Path) -> Path:
    """``path`` as a bundle directory, or a FileNotFoundError naming it (``sugar validate``
    checks a config with this before anything loads)."""
    directory = Path(path)
    if not (directory / "model.json").is_file():
        raise FileNotFoundError(
            f"teacher bundle {str(directory)!r}: no model.json there; give a trained run's model "
            "directory (teacher.options.path)"
        )
    return directory


@register_teacher("bundle")
def build_bundle_teacher(path: str | Path, batch_size: int = 64) -> BundleTeacher:
    """The ``bundle`` family: ``path`` is a bundle directory (``<run>/model``)."""
    from sugar.api import load

    return BundleTeacher(load(bundle_directory(path)), batch_size)
