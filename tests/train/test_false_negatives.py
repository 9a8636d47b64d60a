"""In-batch false negatives: captions of one image are not each other's negatives.

The masked InfoNCE against a hand-computed value and a naive float64 reference (value and
gradient); bit-identity with the unmasked loss when every image is distinct; the retrieval
objective's pairs (which share an image, which repeat exactly); L_d's targets with duplicates.
"""

from __future__ import annotations

import math
from typing import cast

import pytest
import torch
from torch import Tensor

from sugar.align import SliceEmbeddings
from sugar.data.schema import Sample, Segment
from sugar.losses import StructureOptions, clip_contrastive_loss
from sugar.losses.contrastive import contrastive_loss_without_false_negatives, same_image_mask
from sugar.losses.structure import structure_targets
from sugar.losses.weights import LossWeights
from sugar.models.base import MLLM
from sugar.train.distributed import Shard
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import retrieval_pair

PARTS = ("contrastive_loss", "image_to_text_loss", "text_to_image_loss", "logit_scale", "accuracy")


def _naive(images: Tensor, texts: Tensor, scale: Tensor, same: Tensor) -> Tensor:
    """The masked formula row by row: each row's logsumexp over its unmasked candidates."""
    n = len(images)
    i2t = t2i = torch.zeros((), dtype=images.dtype)
    for i in range(n):
        kept = [c for c in range(n) if not same[i, c]]
        own = scale * images[i] @ texts[i]
        i2t = i2t - (own - torch.logsumexp(scale * texts[kept] @ images[i], 0))
        t2i = t2i - (own - torch.logsumexp(scale * images[kept] @ texts[i], 0))
    return (i2t / n + t2i / n) / 2


def test_the_mask_marks_other_pairs_of_ones_own_image() -> None:
    mask = same_image_mask(["a.jpg", "b.jpg", "a.jpg", "a.jpg", "c.jpg"])
    expected = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in [(0, 2), (0, 3), (2, 3)]:
        expected[i, j] = expected[j, i] = True
    assert torch.equal(mask, expected)
    assert not same_image_mask(["a", "b", "c"]).any()


def test_pairs_0_and_1_sharing_an_image_match_the_hand_computed_loss() -> None:
    # images 0 and 1 are one picture; captions 0, 1 describe it, caption 2 describes image 2
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    mask = same_image_mask(["a.jpg", "a.jpg", "b.jpg"])
    out = contrastive_loss_without_false_negatives(images, texts, torch.tensor(0.0), mask)
    # scale 1. image->text: image 0 sees captions {0: 1, 2: 0}; image 1 sees {1: 0.6, 2: 0};
    # image 2 sees {0: 0, 1: 0.8, 2: 1}. text->image: caption 0 sees images {0: 1, 2: 0};
    # caption 1 sees {1: 0.6, 2: 0.8}; caption 2 sees {0: 0, 1: 0, 2: 1}.
    i2t = (
        math.log(1 + math.exp(-1))
        + math.log(1 + math.exp(-0.6))
        + math.log(1 + math.exp(-1) + math.exp(-0.2))
    ) / 3
    t2i = (
        math.log(1 + math.exp(-1)) + math.log(1 + math.exp(0.2)) + math.log(1 + 2 * math.exp(-1))
    ) / 3
    assert float(out["image_to_text_loss"]) == pytest.approx(i2t, abs=1e-6)
    assert float(out["text_to_image_loss"]) == pytest.approx(t2i, abs=1e-6)
    assert float(out["contrastive_loss"]) == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    assert float(out["accuracy"]) == 1.0  # unmasked, caption 0 (1.0) would beat caption 1 (0.6)
    unmasked = clip_contrastive_loss(images, texts, torch.tensor(0.0))
    assert float(unmasked["contrastive_loss"]) > float(out["contrastive_loss"]) + 0.1


def test_the_masked_loss_and_its_gradient_match_the_naive_reference() -> None:
    generator = torch.Generator().manual_seed(3)
    same = same_image_mask(["a", "b", "a", "c", "b", "a"])
    images, texts = (
        torch.nn.functional.normalize(torch.randn(6, 5, generator=generator), dim=-1).double()
        for _ in range(2)
    )
    runs = []
    for loss in ("masked", "naive"):
        a, b = images.clone().requires_grad_(), texts.clone().requires_grad_()
        s = torch.tensor(math.log(3.0), dtype=torch.float64, requires_grad=True)
        if loss == "masked":
            out = contrastive_loss_without_false_negatives(a, b, s, same)["contrastive_loss"]
        else:
            out = _naive(a, b, s.exp(), same)
        out.backward()
        runs.append([out, a.grad, b.grad, s.grad])
    for got, want in zip(*runs, strict=True):
        assert got is not None and want is not None and torch.isfinite(got).all()
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("hard", [False, True])
def test_distinct_images_give_the_unmasked_loss_and_gradient_bit_for_bit(hard: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    negatives = torch.randn(8, 2, 16, generator=generator) if hard else None
    mask = same_image_mask([f"{i}.jpg" for i in range(8)])
    runs = []
    for loss in ("masked", "plain"):
        a, b = images.clone().requires_grad_(), texts.clone().requires_grad_()
        s = torch.tensor(math.log(1 / 0.07), requires_grad=True)
        if loss == "masked":
            out = contrastive_loss_without_false_negatives(a, b, s, mask, negatives)
        else:
            out = clip_contrastive_loss(a, b, s, negatives)
        out["contrastive_loss"].backward()
        runs.append(([out[k] for k in PARTS], [a.grad, b.grad, s.grad]))
    (values, grads), (plain_values, plain_grads) = runs
    for got, want in zip(values + grads, plain_values + plain_grads, strict=True):
        assert got is not None and want is not None and torch.equal(got, want)


def test_hard_negatives_are_never_masked() -> None:
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    hard = torch.tensor([[[0.0, 1.0]], [[0.8, 0.6]], [[1.0, 0.0]]])  # (3, 1, 2)
    mask = same_image_mask(["a", "a", "b"])
    out = contrastive_loss_without_false_negatives(images, texts, torch.tensor(0.0), mask, hard)
    # image 0 (scale 1): own caption 1, caption 2 at 0, hard negatives at 0, 0.8 and 1
    row0 = math.log(1 + math.exp(-1) * (1 + 1 + math.exp(0.8) + math.exp(1)))
    row1 = math.log(1 + math.exp(-0.6) * (1 + 1 + math.exp(0.8) + math.exp(1)))
    row2 = math.log(1 + math.exp(-1) * (1 + math.exp(0.8) + math.exp(1) + math.exp(0.6) + 1))
    assert float(out["image_to_text_loss"]) == pytest.approx((row0 + row1 + row2) / 3, abs=1e-6)


def test_a_mask_of_the_wrong_shape_or_on_the_diagonal_is_refused() -> None:
    eye = torch.eye(3)
    with pytest.raises(ValueError, match=r"\(3, 3\) bool"):
        contrastive_loss_without_false_negatives(
            eye, eye, torch.tensor(0.0), torch.ones(2, 2).bool()
        )
    with pytest.raises(ValueError, match="diagonal"):
        contrastive_loss_without_false_negatives(
            eye, eye, torch.tensor(0.0), torch.ones(3, 3).bool()
        )


# --------------------------------------------------------------------------------------------
# The retrieval objective's pairs
# --------------------------------------------------------------------------------------------


def _caption(sample_id: str, image: str, text: str) -> Sample:
    return Sample(sample_id, [Segment.image_(image), Segment.text_(text, "target")], "caption")


def _views(*sources: Sample) -> list[Sample]:
    return [view for source in sources for view in retrieval_pair(source)]  # (query, document)


def _objective() -> SugarObjective:
    return SugarObjective(32, LossWeights(alpha=0.0, contrastive=1.0), StructureOptions())


def _contrastive(objective: SugarObjective, r: Tensor, samples: list[Sample]) -> dict[str, Tensor]:
    no_model = cast(MLLM, None)  # used for hard negatives only, and there are none
    return objective.contrastive_from(no_model, r, samples, ".", Shard())


def test_objective_with_distinct_images_is_the_unmasked_loss_bit_for_bit() -> None:
    samples = _views(*(_caption(f"c{i}", f"img/{i}.jpg", f"Caption {i}.") for i in range(5)))
    r = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    objective = _objective()
    got_r = r.clone().requires_grad_()
    out = _contrastive(objective, got_r, samples)
    out["contrastive_loss"].backward()
    got_scale_grad = objective.logit_scale.grad
    objective.logit_scale.grad = None
    want_r = r.clone().requires_grad_()
    documents, queries = [1, 3, 5, 7, 9], [0, 2, 4, 6, 8]
    want = clip_contrastive_loss(want_r[documents], want_r[queries], objective.logit_scale)
    want["contrastive_loss"].backward()
    assert int(out["pairs"]) == 5
    for key in PARTS:
        assert torch.equal(out[key], want[key]), key
    assert got_r.grad is not None and want_r.grad is not None
    assert torch.equal(got_r.grad, want_r.grad)
    want_scale_grad = objective.logit_scale.grad
    assert got_scale_grad is not None and want_scale_grad is not None
    assert torch.equal(got_scale_grad, want_scale_grad)


def test_objective_masks_captions_of_one_image_and_counts_an_exact_repeat_once() -> None:
    samples = _views(
        _caption("c0", "img/a.jpg", "A cat on a mat."),
        _caption("c1", "img/a.jpg", "A sleeping cat."),  # another caption of image a
        _caption("c2", "img/b.jpg", "A dog."),
        _caption("c3", "img/a.jpg", "A cat on a mat."),  # c0 again, exactly: dropped
    )
    r = torch.nn.functional.normalize(torch.randn(8, 8), dim=-1)
    objective = _objective()
    out = _contrastive(objective, r, samples)
    assert int(out["pairs"]) == 3
    want = contrastive_loss_without_false_negatives(
        r[[1, 3, 5]], r[[0, 2, 4]], objective.logit_scale, same_image_mask(["a", "a", "b"])
    )
    for key in PARTS:
        assert torch.equal(out[key], want[key]), key
    plain = clip_contrastive_loss(r[[1, 3, 5]], r[[0, 2, 4]], objective.logit_scale)
    assert not torch.equal(out["contrastive_loss"], plain["contrastive_loss"])


def test_one_pair_left_after_dropping_repeats_is_not_a_loss() -> None:
    samples = _views(_caption("c0", "a.jpg", "A cat."), _caption("c1", "a.jpg", "A cat."))
    out = _contrastive(_objective(), torch.randn(4, 8), samples)
    assert set(out) == {"pairs"} and int(out["pairs"]) == 1


# --------------------------------------------------------------------------------------------
# L_d with duplicates: targets stay finite (no division by a zero spread)
# --------------------------------------------------------------------------------------------


def test_structure_targets_stay_finite_when_documents_repeat() -> None:
    generator = torch.Generator().manual_seed(1)

    def unit(*shape: int) -> Tensor:
        return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)

    # four one-slice image documents; three the same picture (COCO: captions of one image), or
    # all four the same (every z-score group without spread)
    image, cross = unit(4, 1, 6), unit(4, 1, 5)
    image[1:3], cross[1:3] = image[0], cross[0]
    text, is_text, lengths = (
        unit(4, 1, 7),
        torch.zeros(4, 1, dtype=torch.bool),
        torch.ones(4).long(),
    )
    index, ends = torch.arange(4), torch.zeros(4, dtype=torch.long)
    off_diagonal = ~torch.eye(4, dtype=torch.bool)
    for every in (False, True):
        i, c = (image[:1].expand(4, 1, 6), cross[:1].expand(4, 1, 5)) if every else (image, cross)
        slices = SliceEmbeddings(i.clone(), text, c.clone(), is_text, lengths)
        for mode in ("fixed", "pair_length"):
            for triple_kernel in (False, True):
                options = StructureOptions(sigma_mode=mode, triple_kernel=triple_kernel)
                target = structure_targets(slices, index, ends, sigma=1.0, options=options)
                assert torch.isfinite(target).all() and ((target >= 0) & (target <= 1)).all()
                if every:  # no spread: z = 0, sigmoid(0) = 0.5 off the same-sample diagonal
                    assert torch.equal(target[off_diagonal], torch.full((12,), 0.5))
