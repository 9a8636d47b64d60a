"""sentence-transformers-style inputs and outputs for :meth:`sugar.api.SugarModel.encode`.

An input is a text, a PIL image, a ``{"text": ..., "image": ...}`` dict (image first; the
image a PIL image or a path relative to ``root``; either key may be missing) or a
:class:`~sugar.data.schema.Sample`. PIL images are written losslessly (PNG) to a temporary
directory for the forward pass, since samples name their images by path.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sugar.data.jsonl import resolve_image
from sugar.data.schema import Sample, Segment

__all__ = ["EncodeInput", "encoded", "is_single", "staged_samples"]

EncodeInput = str | Image.Image | Mapping[str, Any] | Sample
"""One input of ``encode``."""


def is_single(inputs: Any) -> bool:
    """Whether ``inputs`` is one input rather than a list of them (then ``encode`` returns one
    vector, as sentence-transformers does for a single string)."""
    return isinstance(inputs, (str, Image.Image, Mapping, Sample))


@contextmanager
def staged_samples(
    inputs: Sequence[EncodeInput], root: str | Path, prompt: str | None = None
) -> Iterator[tuple[list[Sample], Path]]:
    """Samples of ``inputs`` and the root their image paths are relative to, valid inside the
    ``with`` block. ``prompt`` is prepended to each sample as a context text segment."""
    with TemporaryDirectory(prefix="sugar-encode-") as tmp:
        staged = Path(tmp)
        root = Path(root).resolve()
        uses_pil = any(_has_pil(item) for item in inputs)
        base = staged if uses_pil else root
        count = 0

        def image(value: Any, where: str) -> Segment:
            nonlocal count
            if isinstance(value, Image.Image):
                count += 1
                name = f"pil-{count}.png"
                value.save(staged / name, format="PNG")
                return Segment.image_(name)
            if isinstance(value, (str, Path)) and not uses_pil:
                return Segment.image_(str(value))
            if isinstance(value, (str, Path)):  # one root for all: copy it beside the PIL ones
                count += 1
                source = resolve_image(root, str(value))
                name = f"file-{count}{source.suffix}"
                shutil.copyfile(source, staged / name)
                return Segment.image_(name)
            raise ValueError(f"{where}: an image is a PIL image or a path, not {type(value)}")

        samples = []
        for i, item in enumerate(inputs):
            where = f"inputs[{i}]"
            if isinstance(item, Sample):
                if uses_pil:
                    segments = [
                        image(s.image, where) if s.image is not None else s for s in item.segments
                    ]
                    item = Sample(item.id, segments, item.task, dict(item.meta))
                sample = item
            elif isinstance(item, str):
                sample = Sample(f"input-{i}", [Segment.text_(item)])
            elif isinstance(item, Image.Image):
                sample = Sample(f"input-{i}", [image(item, where)])
            elif isinstance(item, Mapping):
                unknown = sorted(set(item) - {"text", "image"})
                if unknown:
                    raise ValueError(f"{where}: unknown key(s) {unknown}; use 'text' and 'image'")
                segments = [image(item["image"], where)] if item.get("image") is not None else []
                if item.get("text") is not None:
                    segments.append(Segment.text_(str(item["text"])))
                if not segments:
                    raise ValueError(f"{where}: a dict input needs 'text' or 'image'")
                sample = Sample(f"input-{i}", segments)
            else:
                raise ValueError(
                    f"{where}: a text, a PIL image, a {{'text', 'image'}} dict or a Sample, "
                    f"not {type(item).__name__}"
                )
            if prompt:
                sample = Sample(sample.id, [Segment.text_(prompt), *sample.segments],
                                sample.task, dict(sample.meta))  # fmt: skip
            samples.append(sample)
        yield samples, base


def _has_pil(item: Any) -> bool:
    if isinstance(item, Image.Image):
        return True
    if isinstance(item, Mapping):
        return isinstance(item.get("image"), Image.Image)
    return False


def encoded(
    vectors: Tensor,
    *,
    single: bool,
    normalize_embeddings: bool,
    truncate_dim: int | None,
    convert_to: Literal["numpy", "tensor", "list"],
) -> Any:
    """sentence-transformers' output conventions for (B, P) ``vectors``: truncate to
    ``truncate_dim`` first, then L2-normalise if asked; a numpy array, a tensor or a list of
    1-D tensors; one row when the input was ``single``."""
    if truncate_dim is not None:
        if truncate_dim < 1:
            raise ValueError(f"truncate_dim={truncate_dim}: must be >= 1")
        vectors = vectors[:, :truncate_dim]
    if normalize_embeddings:
        vectors = torch.nn.functional.normalize(vectors, dim=1)
    if convert_to == "tensor":
        return vectors[0] if single else vectors
    if convert_to == "numpy":
        array: np.ndarray = vectors.numpy()
        return array[0] if single else array
    rows = list(vectors)
    return rows[0] if single else rows
