"""CLIP-style InfoNCE against a hand-computed value, the clamp and the hard negatives."""

from __future__ import annotations

import math

import pytest
import torch

from sugar.losses import MAX_LOGIT_SCALE, clip_contrastive_loss


def _naive(
    images: list[list[float]], texts: list[list[float]], hard: list[list[list[float]]], scale: float
) -> float:
    """The formula written out with Python floats (one loop per direction)."""

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    candidates = texts + [h for row in hard for h in row]
    i2t = t2i = 0.0
    for i, image in enumerate(images):
        logits = [scale * dot(image, c) for c in candidates]
        i2t -= logits[i] - math.log(sum(math.exp(x) for x in logits))
    for j, text in enumerate(texts):
        logits = [scale * dot(text, a) for a in images]
        t2i -= logits[j] - math.log(sum(math.exp(x) for x in logits))
    n = len(images)
    return (i2t / n + t2i / n) / 2


def test_matches_the_hand_computed_value_with_hard_negatives() -> None:
    images = [[1.0, 0.0], [0.6, 0.8]]
    texts = [[0.8, 0.6], [0.6, 0.8]]
    hard = [[[1.0, 0.0]], [[-0.6, 0.8]]]
    out = clip_contrastive_loss(
        torch.tensor(images), torch.tensor(texts), torch.tensor(math.log(2.0)), torch.tensor(hard)
    )
    assert float(out["contrastive_loss"]) == pytest.approx(_naive(images, texts, hard, 2.0), 1e-6)
    # image 0: own text 1.6 < its hard negative 2.0; image 1: own 2.0 > 1.92, 1.2, 0.56
    assert float(out["accuracy"]) == 0.5
    without = clip_contrastive_loss(
        torch.tensor(images), torch.tensor(texts), torch.tensor(math.log(2.0))
    )
    assert float(without["contrastive_loss"]) == pytest.approx(_naive(images, texts, [], 2.0))
    # a worked value: identity pairs, scale 1 -> log(1 + e^-1) in both directions
    eye = clip_contrastive_loss(torch.eye(2), torch.eye(2), torch.tensor(0.0))
    assert float(eye["contrastive_loss"]) == pytest.approx(math.log(1 + math.exp(-1)))


def test_scale_is_clamped_at_100_like_open_clip() -> None:
    scale = torch.tensor(math.log(1000.0), requires_grad=True)
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    out = clip_contrastive_loss(emb, emb.flip(0), scale)
    assert float(out["logit_scale"]) == MAX_LOGIT_SCALE
    out["contrastive_loss"].backward()
    assert scale.grad is not None and float(scale.grad) == 0.0


def test_gradients_reach_both_sides_and_the_temperature() -> None:
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    s = torch.tensor(1.0, requires_grad=True)
    clip_contrastive_loss(a, b, s)["contrastive_loss"].backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (a, b, s))


@pytest.mark.parametrize(
    ("image", "text", "hard"),
    [((3, 4), (2, 4), None), ((3, 4), (3, 5), None), ((3, 4), (3, 4), (2, 1, 4))],
)
def test_shape_errors_name_the_shapes(
    image: tuple[int, ...], text: tuple[int, ...], hard: tuple[int, ...] | None
) -> None:
    with pytest.raises(ValueError, match=r"\("):
        clip_contrastive_loss(
            torch.zeros(image),
            torch.zeros(text),
            torch.tensor(0.0),
            None if hard is None else torch.zeros(hard),
        )
