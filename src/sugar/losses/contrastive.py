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

>>> import torch
>>> eye = torch.eye(2)
>>> out = clip_contrastive_loss(eye, eye, torch.tensor(0.0))
>>> round(float(out["contrastive_loss"]), 4)  # log(1 + e^-1) per row
0.3133
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional

__all__ = ["MAX_LOGIT_SCALE", "clip_contrastive_loss"]

MAX_LOGIT_SCALE = 100.0
"""Upper bound of ``exp(logit_scale)`` (open_clip clamps ``logit_scale`` at ``log(100)``)."""


def clip_contrastive_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor,
    hard_negative_text_emb: Tensor | None = None,
    max_logit_scale: float = MAX_LOGIT_SCALE,
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
