"""The grounding diagnostic where one image has several captions: the shuffle never gives a
caption an image with its own path, and the image cosine is over distinct images. Against the
former by-caption derangement, kept here as the naive reference: equal wherever every path is
distinct."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sugar.data.jsonl import read_samples, resolve_image
from sugar.data.schema import Sample, Segment
from sugar.eval.grounding import _derangement, _nll, caption_pairs, grounding, image_gallery
from sugar.eval.tasks import EvalModel
from sugar.models.base import MLLM
from tests.eval.test_grounding import Reader
from tests.eval.test_tasks import tiny_eval

__all__ = ["tiny_eval"]  # the shared fixture of tests/eval/test_tasks.py


@torch.no_grad()
def by_caption_grounding(
    model: MLLM, samples: Sequence[Sample], root: str | Path, batch_size: int = 32, seed: int = 0
) -> dict[str, float | str]:
    """The former ``grounding``: a derangement of the captions' indices (caption i gets caption
    ``moved[i]``'s image), and the cosine over every caption's image."""
    pairs = caption_pairs(samples)
    right = _nll(model, pairs, root, batch_size)
    moved = _derangement(len(pairs), seed)
    shuffled = _nll(
        model, [(pairs[j][0], pairs[i][1]) for i, j in enumerate(moved)], root, batch_size
    )
    out: dict[str, float | str] = {
        "nll_right": float(right.mean()),
        "nll_shuffled": float(shuffled.mean()),
        "nll_gap": float((shuffled - right).mean()),
        "gap_positive": float((shuffled > right).float().mean()),
    }
    tokens = model.image_tokens_of([str(resolve_image(root, image)) for image, _ in pairs])
    if tokens is None:
        out["image_cosine"] = "n/a"
    else:
        unit = F.normalize(tokens.flatten(1).float(), dim=1)
        off = ~torch.eye(len(pairs), dtype=torch.bool)
        out["image_cosine"] = float((unit @ unit.T)[off].mean())
    return out


class Recorder(nn.Module):
    """Scores each (image, caption) with a fixed pseudo-random number and records every pair
    it scored; visual tokens: a fixed random (2, 3) per image path."""

    def __init__(self) -> None:
        super().__init__()
        self.scored: list[tuple[str, str]] = []

    def score(self, samples: Sequence[Sample], root: str | Path) -> torch.Tensor:
        pairs = [(s.segments[0].image or "", s.segments[1].text or "") for s in samples]
        self.scored += pairs
        return torch.tensor([-(zlib.crc32(f"{i}|{t}".encode()) % 1000) / 100 for i, t in pairs])

    def image_tokens_of(self, paths: Sequence[str]) -> torch.Tensor:
        seeds = [zlib.crc32(Path(p).name.encode()) for p in paths]
        return torch.stack([torch.randn(2, 3, generator=torch.Generator().manual_seed(s))
                            for s in seeds])  # fmt: skip


def _captions(images: int, per_image: int) -> list[Sample]:
    """``per_image`` samples ``[img<i>.png, "Caption <n> of img<i>."]`` per image, grouped by
    image (COCO's layout)."""
    return [
        Sample(f"s{i}-{n}", [Segment.image_(f"img{i}.png"),
                             Segment.text_(f"Caption {n} of img{i}.", "target")])
        for i in range(images)
        for n in range(per_image)
    ]  # fmt: skip


@pytest.mark.parametrize("count", [2, 3, 7, 40])
def test_distinct_paths_give_exactly_the_former_figures(count: int, tmp_path: Path) -> None:
    samples = _captions(count, 1)
    for seed in range(5):
        new, old = Recorder(), Recorder()
        ours = grounding(new, samples, tmp_path, batch_size=4, seed=seed)  # type: ignore[arg-type]
        former = by_caption_grounding(old, samples, tmp_path, 4, seed)  # type: ignore[arg-type]
        assert ours == former
        assert new.scored == old.scored  # the same shuffled pairs, in the same order


def test_a_real_model_gives_exactly_the_former_figures_on_the_world(
    tiny_eval: tuple[Path, EvalModel, EvalModel],
) -> None:
    root, model, _ = tiny_eval
    samples = read_samples(root / "caption" / "test.jsonl", root)
    assert len(image_gallery([s.segments[0].image or "" for s in samples])[0]) == len(samples)
    for seed in (0, 1):
        new = grounding(model.backbone, samples, root, batch_size=5, seed=seed)
        assert new == by_caption_grounding(model.backbone, samples, root, batch_size=5, seed=seed)


class PathReader(Reader):
    """:class:`~tests.eval.test_grounding.Reader` whose visual tokens are one-hot per image
    *path* (the same image twice has the same tokens)."""

    def image_tokens_of(self, paths: Sequence[str]) -> torch.Tensor:
        index = [int(Path(p).stem.removeprefix("img")) for p in paths]
        return torch.eye(max(index) + 1)[index][:, None, :]


def test_the_shuffle_never_gives_a_caption_its_own_image(tmp_path: Path) -> None:
    samples = _captions(3, 2)
    former_hits_own = []
    for seed in range(20):
        recorder = Recorder()
        grounding(recorder, samples, tmp_path, seed=seed)  # type: ignore[arg-type]
        right, shuffled = recorder.scored[:6], recorder.scored[6:]
        assert right == caption_pairs(samples)
        for (image, caption), (other, same_caption) in zip(right, shuffled, strict=True):
            assert same_caption == caption and other != image
        moves = {(image, other) for (image, _), (other, _) in zip(right, shuffled, strict=True)}
        assert len(moves) == 3  # both captions of an image get the same other image
        reader = PathReader(sees=True)
        out = grounding(reader, samples, tmp_path, seed=seed)  # type: ignore[arg-type]
        assert out["nll_shuffled"] == 6.0 and out["gap_positive"] == 1.0
        former = by_caption_grounding(reader, samples, tmp_path, seed=seed)  # type: ignore[arg-type]
        former_hits_own.append(former["gap_positive"] != 1.0)
    assert any(former_hits_own)  # the former derangement of captions gave some their own image


def test_the_image_cosine_is_between_different_images(tmp_path: Path) -> None:
    samples = _captions(3, 2)
    out = grounding(PathReader(sees=True), samples, tmp_path)  # type: ignore[arg-type]
    assert out["image_cosine"] == 0.0  # one-hot per distinct path
    former = by_caption_grounding(PathReader(sees=True), samples, tmp_path)  # type: ignore[arg-type]
    assert former["image_cosine"] == pytest.approx(6 / 30)  # each copy met its twin: cosine 1


def test_captions_of_a_single_image_are_refused_as_too_few_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"at least 2 .* got 3 samples of 1 distinct images"):
        grounding(PathReader(sees=True), _captions(1, 3), tmp_path)  # type: ignore[arg-type]
