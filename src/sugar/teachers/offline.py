"""The ``offline`` teacher: EfficientNet-Lite0 and MiniLM features with a trained cross-modal head.

Shapes: N slices, Di / Dt uni-modal image / text width, Dc cross-modal width, F frozen-feature
width.

Uni-modal image = EfficientNet-Lite0 features (1280-d pooled, or a G x G grid of cells
concatenated, G*G*1280-d), uni-modal text = all-MiniLM-L6-v2 mean-pooled (384-d), cross-modal =
a :class:`~sugar.teachers.heads.CrossModalHead` trained by
:func:`sugar.teachers.training.train_teacher`. Real weights from installed packages; no network
(OFFLINE_WEIGHTS.md). The protocol, registry and slice embedding are :mod:`sugar.teachers.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional

from sugar.io import sha256_file
from sugar.models.feature_cache import FeatureCache
from sugar.models.pretrained import (
    FEATURE_DIM,
    EfficientNetGrid,
    images_to_pixels,
    load_minilm,
    minilm_path,
)
from sugar.teachers.base import masked_mean, register_teacher, slice_key, tokenize
from sugar.teachers.heads import CrossModalHead, load_head

__all__ = ["ImageFeatures", "OfflineTeacher", "TextFeatures", "build_offline_teacher"]


# --------------------------------------------------------------------------------------------
# Frozen features of the offline teacher
# --------------------------------------------------------------------------------------------


class ImageFeatures:
    """Frozen EfficientNet-Lite0 features of images at ``image_size`` px: (N, G*G*1280).

    The last feature map pooled to a ``grid`` x ``grid`` grid, cells concatenated row-major
    (G = 1: the pooled 1280-d vector). Not normalised. With ``cache_root``, features persist.
    """

    def __init__(
        self, image_size: int = 128, grid: int = 1, cache_root: str | Path | None = None
    ) -> None:
        if image_size < 32:
            raise ValueError(f"image_size={image_size}: must be >= 32 (EfficientNet stride)")
        self.image_size = image_size
        self.encoder = EfficientNetGrid(grid=grid)
        self.dim = grid * grid * FEATURE_DIM
        self.identity = f"{self.encoder.identity}:px{image_size}"
        self.cache = FeatureCache(cache_root, self.identity) if cache_root is not None else None

    def __call__(
        self,
        images: Sequence[Image.Image],
        batch_size: int = 64,
        keys: Sequence[str] | None = None,
    ) -> Tensor:
        """(N, G*G*1280) features of ``images`` (any size: the centred square of each, resized
        to ``image_size``; :func:`~sugar.models.pretrained.images_to_pixels`). ``keys``: their
        :func:`~sugar.teachers.slice_key` when the caller has them (hashing a photo's pixels
        again costs about a millisecond a megapixel)."""
        return _cached(self.cache, images, self._compute, batch_size, keys)

    def _compute(self, images: Sequence[Image.Image]) -> Tensor:
        pixels = images_to_pixels(images, self.image_size)  # (N, 3, H, W)
        return self.encoder(pixels).flatten(1)  # (N, G*G*1280)


class TextFeatures:
    """Frozen all-MiniLM-L6-v2 features: attention-masked mean of the last hidden state, (N, 384).

    Not normalised (normalising gives the sentence-transformers embedding). Texts are truncated
    at 256 tokens (the model's training length). With ``cache_root``, features persist.
    """

    max_length = 256

    def __init__(self, cache_root: str | Path | None = None) -> None:
        self.tokenizer, model = load_minilm()
        self.model: Any = model
        config: Any = model.config
        self.dim = int(config.hidden_size)
        weights = minilm_path() / "model.safetensors"
        self.identity = f"all-minilm-l6-v2:{sha256_file(weights)[:16]}:mean{self.max_length}"
        self.cache = FeatureCache(cache_root, self.identity) if cache_root is not None else None

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """(N, 384) features of ``texts``."""
        return _cached(self.cache, texts, self._compute, batch_size)

    @torch.no_grad()
    def _compute(self, texts: Sequence[str]) -> Tensor:
        batch = tokenize(self.tokenizer, texts, self.max_length)
        hidden = self.model(**batch).last_hidden_state  # (N, T, 384)
        return masked_mean(hidden, batch["attention_mask"])  # (N, 384)


T = TypeVar("T", Image.Image, str)


def _cached(
    cache: FeatureCache | None,
    items: Sequence[T],
    compute: Callable[[Sequence[T]], Tensor],
    batch_size: int,
    keys: Sequence[str] | None = None,
) -> Tensor:
    """``compute`` over ``items`` in batches, through ``cache`` when given; ``keys`` are the
    items' :func:`slice_key` (computed here when not given). # (N, F)"""
    if not items:
        raise ValueError("no items to encode")
    if keys is None:
        keys = [slice_key(item) for item in items]
    elif len(keys) != len(items):
        raise ValueError(f"{len(keys)} keys for {len(items)} items")
    found = cache.get(dict.fromkeys(keys)) if cache is not None else {}
    todo = {k: item for k, item in zip(keys, items, strict=True) if k not in found}
    pending = list(todo.items())
    if isinstance(pending[0][1] if pending else None, str):
        pending.sort(key=lambda kv: len(str(kv[1])))  # similar lengths share a batch: less padding
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        out = compute([item for _, item in chunk])
        fresh = {k: out[i] for i, (k, _) in enumerate(chunk)}
        found.update(fresh)
        if cache is not None:
            cache.put(fresh)
    if cache is not None:
        cache.flush()
    return torch.stack([found[k] for k in keys])


# --------------------------------------------------------------------------------------------
# The offline teacher
# --------------------------------------------------------------------------------------------


class OfflineTeacher(nn.Module):
    """EfficientNet-Lite0 image, MiniLM text and a trained cross-modal head (module doc).

    ``uni = normalize(frozen features)``; ``cross = head(frozen features)``. Build it with
    :meth:`from_dir` on :func:`~sugar.teachers.training.train_teacher`'s output directory. Always in
    eval mode; encoding runs without gradients.
    """

    def __init__(
        self, head: CrossModalHead, image_features: ImageFeatures, text_features: TextFeatures
    ) -> None:
        super().__init__()
        if head.image_dim != image_features.dim or head.text_dim != text_features.dim:
            raise ValueError(
                f"the head takes ({head.image_dim}, {head.text_dim}) features, the encoders "
                f"give ({image_features.dim}, {text_features.dim})"
            )
        self.head = head.eval().requires_grad_(False)
        self.image_features = image_features
        self.text_features = text_features
        self.image_dim, self.text_dim = image_features.dim, text_features.dim
        self.cross_dim: int = head.dim

    @classmethod
    def from_dir(
        cls,
        head_dir: str | Path,
        feature_cache_dir: str | Path | None = None,
        image_features: ImageFeatures | None = None,
        text_features: TextFeatures | None = None,
    ) -> OfflineTeacher:
        """Load the head saved in ``head_dir`` and the frozen encoders it was trained over.

        Already-loaded ``image_features`` / ``text_features`` may be passed to share them; their
        identities must match the ones the head records (``ValueError`` otherwise).
        """
        head, record = load_head(head_dir)
        if image_features is None:
            image_features = ImageFeatures(record["image_size"], record["grid"], feature_cache_dir)
        if text_features is None:
            text_features = TextFeatures(feature_cache_dir)
        for name, got in (("image", image_features), ("text", text_features)):
            if record[f"{name}_features"] != got.identity:
                raise ValueError(
                    f"{head_dir}: the head was trained over {record[f'{name}_features']!r}, "
                    f"not {got.identity!r}"
                )
        return cls(head, image_features, text_features)

    def train(self, mode: bool = True) -> OfflineTeacher:
        super().train(False)  # a teacher is frozen: dropout stays off
        return self

    @property
    def identity(self) -> str:
        return (
            f"offline[image={self.image_features.identity};text={self.text_features.identity};"
            f"head={self.head.weight_hash()[:16]}]"
        )

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor]:
        features = self.image_features(images)  # (N, Fi)
        return functional.normalize(features, dim=-1), self.head.encode_image(features)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        features = self.text_features(texts)  # (N, Ft)
        return functional.normalize(features, dim=-1), self.head.encode_text(features)


@register_teacher("offline")
def build_offline_teacher(
    head_dir: str | Path, feature_cache_dir: str | Path | None = None
) -> OfflineTeacher:
    """The ``offline`` family: :meth:`OfflineTeacher.from_dir`."""
    return OfflineTeacher.from_dir(head_dir, feature_cache_dir)
