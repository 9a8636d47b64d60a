"""CLIP-style symmetric InfoNCE with a learnable temperature and optional hard-negative texts.

Shapes: N pairs in the batch, D embedding width, H hard-negative texts per pair.

For unit-norm image vectors ``a_i`` and text vectors ``b_j`` and ``s = min(exp(logit_scale),
100)`` (open_clip keeps ``logit_scale`` in log space and clamps the scale at 100)::

    L_i2t = -1/N sum_i log( exp(s a_i.b_i) / sum_{c in C} exp(s a_i.c) )
    L_t2i = -1/N sum_j log( exp(s b_j.a_j) / sum_k exp(s b_j.a_k) )
    contrastive_loss = (L_i2t + L_t2i) / 2

where the candidate texts C are the N batch texts plus, when given, all N*H hard-negative texts
(NegCLIP, Yuksekgonul et al. 2023: every image sees every hard negative of the batch). Hard
negatives enter the image->text direction only: they have no image of their own. Reference:
Radford et al. 2021 (CLIP), Eq. in Fig. 3; open_clip's ``ClipLoss``.

For sets with several captions per image (COCO: five),
:func:`contrastive_loss_without_false_negatives` leaves the pairs that show the same image
(:func:`same_image_mask`) out of each other's denominators; with no such pair it is
:func:`clip_contrastive_loss` itself.

>>> import torch
>>> eye = torch.eye(2)
>>> out = clip_contrastive_loss(eye, eye, torch.tensor(0.0))
>>> round(float(out["contrastive_loss"]), 4)  # log(1 + e^-1) per row
0.3133
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor
from torch.nn import functional

__all__ = [
    "MAX_LOGIT_SCALE",
    "clip_contrastive_loss",
    "contrastive_loss_without_false_negatives",
    "same_image_mask",
]

MAX_LOGIT_SCALE = 100.0
"""Upper bound of ``exp(logit_scale)`` (open_clip clamps ``logit_scale`` at ``log(100)``)."""


def clip_contrastive_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor,
    hard_negative_text_emb: Tensor | None = None,
    max_logit_scale: float = MAX_LOGIT_SCALE,
    *,
    same_image: Tensor | None = None,
) -> dict[str, Tensor]:
    """Symmetric InfoNCE of N matched pairs (module doc for the formula).

    Args:
        image_emb: (N, D) image vectors, expected unit-norm (not re-normalised here).
        text_emb: (N, D) text vectors of the same pairs, expected unit-norm.
        logit_scale: scalar tensor, the *log* of the inverse temperature (learnable); the scale
            used is ``exp(logit_scale)`` clamped at ``max_logit_scale`` (no gradient beyond it).
        hard_negative_text_emb: optional (N, H, D) hard-negative texts, added as candidates of
            the image->text direction for every image.
        max_logit_scale: the clamp of ``exp(logit_scale)`` (open_clip: 100).
        same_image: optional (N, N) bool, False on the diagonal (:func:`same_image_mask`): the
            false negatives, left out of both directions' denominators
            (:func:`contrastive_loss_without_false_negatives` has the formula). ``None``, or a
            mask with no True entry, computes exactly the unmasked loss.

    Returns:
        ``contrastive_loss`` (the objective), ``image_to_text_loss``, ``text_to_image_loss``,
        ``logit_scale`` (the scale used, detached) and ``accuracy`` (detached fraction of images
        whose own text is the top candidate, ties pessimistic) -- all scalars.
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb {tuple(image_emb.shape)} and text_emb {tuple(text_emb.shape)} must both "
            "be (N, D)"
        )
    if logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
    n, d = image_emb.shape
    if same_image is not None:
        if same_image.shape != (n, n) or same_image.dtype != torch.bool:
            raise ValueError(
                f"same_image must be ({n}, {n}) bool, got {tuple(same_image.shape)} "
                f"{same_image.dtype}"
            )
        if bool(same_image.diagonal().any()):
            raise ValueError("same_image must be False on the diagonal (a pair's own image)")
        if not bool(same_image.any()):
            same_image = None  # nothing to mask: the unmasked computation, bit for bit
    candidates = text_emb  # (C, D), C = N or N + N*H
    if hard_negative_text_emb is not None:
        if hard_negative_text_emb.dim() != 3 or hard_negative_text_emb.shape[::2] != (n, d):
            raise ValueError(
                f"hard_negative_text_emb {tuple(hard_negative_text_emb.shape)} must be "
                f"({n}, H, {d})"
            )
        candidates = torch.cat([text_emb, hard_negative_text_emb.reshape(-1, d)])
    scale = logit_scale.reshape(()).exp().clamp(max=max_logit_scale)
    logits_i2t = scale * image_emb @ candidates.T  # (N, C)
    logits_t2i = scale * text_emb @ image_emb.T  # (N, N)
    if same_image is not None:
        mask = same_image.to(image_emb.device)  # (N, N)
        wide = functional.pad(mask, (0, candidates.shape[0] - n))  # (N, C): hard negatives kept
        logits_i2t = logits_i2t.masked_fill(wide, -math.inf)
        logits_t2i = logits_t2i.masked_fill(mask, -math.inf)
    target = torch.arange(n, device=image_emb.device)
    i2t = functional.cross_entropy(logits_i2t, target)
    t2i = functional.cross_entropy(logits_t2i, target)
    with torch.no_grad():
        own = logits_i2t[target, target]
        others = logits_i2t.clone()
        others[target, target] = -math.inf
        accuracy = (own > others.max(dim=1).values).float().mean()
    return {
        "contrastive_loss": (i2t + t2i) / 2,
        "image_to_text_loss": i2t,
        "text_to_image_loss": t2i,
        "logit_scale": scale.detach(),
        "accuracy": accuracy,
    }


def same_image_mask(keys: Sequence[Hashable]) -> Tensor:
    """(N, N) bool: True at ``(i, j)``, ``i != j``, where pair j shows pair i's image.

    ``keys``: (N,) the image identity of each pair (an image path, or any hashable that names
    the image). These are the in-batch false negatives: another caption of one's own image, or
    one's own image again. The diagonal is always False.

    >>> same_image_mask(["a.jpg", "a.jpg", "b.jpg"]).int().tolist()
    [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    """
    first: dict[Hashable, int] = {}
    ids = torch.tensor([first.setdefault(key, len(first)) for key in keys])  # (N,)
    mask = ids[:, None] == ids[None, :]  # (N, N)
    return mask.fill_diagonal_(False)


def contrastive_loss_without_false_negatives(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor,
    same_image: Tensor,
    hard_negative_text_emb: Tensor | None = None,
    max_logit_scale: float = MAX_LOGIT_SCALE,
) -> dict[str, Tensor]:
    """Symmetric InfoNCE with the false negatives ``same_image`` (N, N) left out of both
    directions' denominators: :func:`clip_contrastive_loss` with its ``same_image``.

    With ``M = same_image`` (:func:`same_image_mask`) and ``s`` the clamped scale::

        L_i2t = -1/N sum_i log( exp(s a_i.b_i) / sum_{c in C, not M[i, c]} exp(s a_i.c) )
        L_t2i = -1/N sum_j log( exp(s b_j.a_j) / sum_{k, not M[j, k]} exp(s b_j.a_k) )

    so a caption of image i is not pushed away from image i, nor is image i's copy pushed away
    from i's caption (the usual false-negative mask for sets with several captions per image,
    such as COCO's five); hard negatives are never masked. ``accuracy`` ranks
    each image's own text among its unmasked candidates. When ``same_image`` has no True entry
    this is the unmasked loss (the same computation: bit-identical value and gradient).
    Returns the same named parts.

    >>> eye = torch.eye(3)
    >>> mask = same_image_mask(["a", "a", "b"])
    >>> out = contrastive_loss_without_false_negatives(eye, eye, torch.tensor(0.0), mask)
    >>> # rows 0, 1: one negative, log(1 + e^-1); row 2: two, log(1 + 2 e^-1); both directions
    >>> round(float(out["contrastive_loss"]), 4)
    0.3927
    """
    return clip_contrastive_loss(
        image_emb, text_emb, logit_scale, hard_negative_text_emb, max_logit_scale,
        same_image=same_image,
    )  # fmt: skip
