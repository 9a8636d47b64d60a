"""The image-grounding diagnostic, on stand-in models whose answers are known by hand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from sugar.data.schema import Sample, Segment
from sugar.eval.grounding import _derangement, grounding


class Reader(nn.Module):
    """Scores a caption -1 nat when its image is the one it was written for, -6 otherwise
    (``sees=False``: -3 whatever the image); visual tokens: one-hot per image, or all equal."""

    def __init__(self, sees: bool) -> None:
        super().__init__()
        self.sees = sees

    def score(self, samples: Sequence[Sample], root: str | Path) -> torch.Tensor:
        out = []
        for sample in samples:
            image, text = sample.segments[0].image, sample.segments[1].text
            assert image is not None and text is not None
            right = Path(image).stem == text.split()[-1].rstrip(".")
            out.append((-1.0 if right else -6.0) if self.sees else -3.0)
        return torch.tensor(out)

    def image_tokens_of(self, paths: Sequence[str]) -> torch.Tensor:
        if not self.sees:
            return torch.ones(len(paths), 1, 4)
        return torch.eye(len(paths))[:, None, :]


@pytest.fixture
def pairs(tmp_path: Path) -> list[Sample]:
    samples = []
    for i in range(5):
        Image.new("RGB", (4, 4)).save(tmp_path / f"img{i}.png")
        segments = [Segment.image_(f"img{i}.png"), Segment.text_(f"Picture img{i}.", "target")]
        samples.append(Sample(f"s{i}", segments))
    return samples


def test_a_model_that_reads_its_images_has_a_gap(pairs: list[Sample], tmp_path: Path) -> None:
    out = grounding(Reader(sees=True), pairs, tmp_path)  # type: ignore[arg-type]
    assert out == {
        "nll_right": 1.0, "nll_shuffled": 6.0, "nll_gap": 5.0, "gap_positive": 1.0,
        "image_cosine": 0.0,
    }  # fmt: skip


def test_a_blind_model_has_none(pairs: list[Sample], tmp_path: Path) -> None:
    out = grounding(Reader(sees=False), pairs, tmp_path)  # type: ignore[arg-type]
    assert out["nll_gap"] == 0.0 and out["gap_positive"] == 0.0
    assert out["image_cosine"] == pytest.approx(1.0)


def test_the_shuffle_moves_every_image_and_is_fixed(pairs: list[Sample]) -> None:
    for count in (2, 3, 7, 50):
        moved = _derangement(count, seed=0)
        assert sorted(moved) == list(range(count))
        assert all(i != j for i, j in enumerate(moved))
        assert moved == _derangement(count, seed=0)


def test_fewer_than_two_pairs_is_refused(pairs: list[Sample], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        grounding(Reader(sees=True), pairs[:1], tmp_path)  # type: ignore[arg-type]
