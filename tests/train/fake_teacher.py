"""A deterministic stand-in teacher for loop tests: vectors from a hash of each slice's content.

It has the Teacher layout (separate image / text / cross tensors, unit-norm) but no weights, so
loop tests need neither MiniLM nor a trained head. Similar contents do not get similar vectors:
it tests mechanics, not learning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from sugar.align import SliceEmbeddings
from sugar.data.schema import Sample
from sugar.data.slices import slices


def _vector(content: str, dim: int) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(content.encode()).digest()[:8], "little")
    return F.normalize(torch.randn(dim, generator=torch.Generator().manual_seed(seed)), dim=0)


class FakeTeacher:
    calls = 0

    def __call__(self, samples: Sequence[Sample], root: str | Path) -> SliceEmbeddings:
        FakeTeacher.calls += 1
        pieces = [slices(sample) for sample in samples]
        b, s = len(pieces), max(len(p) for p in pieces)
        image, text, cross = torch.zeros(b, s, 8), torch.zeros(b, s, 6), torch.zeros(b, s, 5)
        is_text = torch.zeros(b, s, dtype=torch.bool)
        for i, sample_slices in enumerate(pieces):
            for j, piece in enumerate(sample_slices):
                content = piece.text if piece.kind == "text" else piece.image
                assert content is not None
                if piece.kind == "text":
                    text[i, j], is_text[i, j] = _vector("t" + content, 6), True
                else:
                    image[i, j] = _vector("i" + content, 8)
                cross[i, j] = _vector("c" + content, 5)
        lengths = torch.tensor([len(p) for p in pieces])
        return SliceEmbeddings(image, text, cross, is_text, lengths)
