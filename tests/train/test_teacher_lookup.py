"""TeacherLookup's in-memory layer returns exactly what embed_samples computes, hit or miss."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F

from sugar.data.jsonl import read_samples
from sugar.data.views import apply_views
from sugar.teachers import embed_samples
from sugar.teachers.lookup import TeacherLookup


class HashTeacher:
    """The Teacher protocol with vectors from a hash of the content (no weights)."""

    identity = "hash-teacher"
    image_dim, text_dim, cross_dim = 6, 5, 4
    calls = 0

    def _vectors(self, keys: list[bytes], dim: int) -> torch.Tensor:
        rows = []
        for key in keys:
            seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
            rows.append(torch.randn(dim, generator=torch.Generator().manual_seed(seed)))
        return F.normalize(torch.stack(rows), dim=-1)

    def encode_images(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        HashTeacher.calls += 1
        keys = [image.tobytes() for image in images]
        return self._vectors(keys, 6), self._vectors([b"c" + k for k in keys], 4)

    def encode_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        HashTeacher.calls += 1
        keys = [t.encode() for t in texts]
        return self._vectors(keys, 5), self._vectors([b"c" + k for k in keys], 4)


def test_memory_hits_equal_a_fresh_computation(loop_world: Path) -> None:
    samples = read_samples(loop_world / "story" / "train.jsonl", loop_world)[:3]
    samples += apply_views(
        read_samples(loop_world / "caption" / "train.jsonl", loop_world)[:4], {"split": 1.0}, 0, 0
    )
    lookup = TeacherLookup(HashTeacher(), None, "sentence")
    reference = embed_samples(HashTeacher(), samples, loop_world)
    first = lookup(samples, loop_world)
    HashTeacher.calls = 0
    again = lookup(list(reversed(samples)), loop_world)  # all hits, another order
    assert HashTeacher.calls == 0
    for name in ("image", "text", "cross", "is_text", "lengths"):
        assert torch.equal(getattr(first, name), getattr(reference, name)), name
        assert torch.equal(getattr(again, name), getattr(reference, name).flip(0)), name


def test_memory_is_bounded(loop_world: Path) -> None:
    samples = read_samples(loop_world / "caption" / "train.jsonl", loop_world)[:6]
    lookup = TeacherLookup(HashTeacher(), None, "sentence", memory_slices=4)
    for sample in samples:
        lookup([sample], loop_world)
    assert lookup._slices_held <= 4 + 2  # at most the bound plus the batch just served
