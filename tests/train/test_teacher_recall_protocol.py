"""``sugar teachers report``'s image -> text recall on a set with several captions per image:
each distinct image queries once, any of its captions relevant (the protocol of sugar eval)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import sugar.teachers.sensitivity as sensitivity
from sugar.data.schema import Sample, Segment


def _pair(i: int, image: str, text: str) -> Sample:
    return Sample(f"s{i}", [Segment.image_(image), Segment.text_(text, "target")])


@pytest.fixture
def vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {
        "a.png": [1.0, 0.0, 0.0], "b.png": [0.0, 1.0, 0.0], "c.png": [0.0, 0.0, 1.0],
        "a, said plainly": [0.9, 0.1, 0.0], "a, said best": [1.0, 0.0, 0.0],
        "b": [0.0, 1.0, 0.0], "c": [0.1, 0.0, 0.9],
    }  # fmt: skip
    monkeypatch.setattr(sensitivity, "load_image", lambda root, path: path)
    monkeypatch.setattr(
        sensitivity, "embed_slices",
        lambda teacher, items, cache=None: SimpleNamespace(
            cross=torch.tensor([table[item] for item in items])
        ),
    )  # fmt: skip


@pytest.mark.usefixtures("vectors")
def test_an_image_whose_top_caption_is_its_other_caption_is_a_hit() -> None:
    samples = [_pair(0, "a.png", "a, said plainly"), _pair(1, "a.png", "a, said best"),
               _pair(2, "b.png", "b"), _pair(3, "c.png", "c")]  # fmt: skip
    result = sensitivity.retrieval_recall(None, samples, ".", ks=(1,))  # type: ignore[arg-type]
    # Per pair (the old protocol), pair 0's image a.png ranks "a, said best" first: a miss.
    assert result == {"R@1": 1.0, "candidates": 4.0}


@pytest.mark.usefixtures("vectors")
def test_distinct_images_query_once_each_as_before() -> None:
    samples = [_pair(0, "a.png", "a, said plainly"), _pair(1, "b.png", "b"),
               _pair(2, "c.png", "c")]  # fmt: skip
    result = sensitivity.retrieval_recall(None, samples, ".", ks=(1, 2))  # type: ignore[arg-type]
    assert result == {"R@1": 1.0, "R@2": 1.0, "candidates": 3.0}
