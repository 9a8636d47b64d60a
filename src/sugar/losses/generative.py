"""L_g: next-token cross-entropy on the target spans (METHOD.md section 5).

Shapes: B batch, T tokens, V vocabulary.

``labels`` are aligned with the inputs (``labels[b, t]`` is the token at t, IGNORE_INDEX where
unsupervised: context, images, padding), so the logits at t - 1 predict the label at t.

Two reductions (``train.lm_reduction``):
- ``token``: the mean over every supervised token of the batch (a long caption weighs more than
  a short one, as in LLaVA);
- ``sample``: each sample's mean NLL, then the mean over the samples that have a supervised
  token, so a one-token answer ("yes") weighs as much as a fifteen-token caption.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor
from torch.nn import functional as F

from sugar.data.collate import IGNORE_INDEX

__all__ = ["LM_REDUCTIONS", "LmReduction", "generative_loss"]

LmReduction = Literal["token", "sample"]
LM_REDUCTIONS: tuple[LmReduction, ...] = ("token", "sample")


def generative_loss(
    logits: Tensor, labels: Tensor, reduction: LmReduction = "token"
) -> dict[str, Tensor]:
    """``{"lm_loss": the mean NLL, "lm_tokens": supervised tokens, "lm_units": what the mean
    is over}``: tokens (``reduction="token"``) or samples with a supervised token
    (``"sample"``). Means of several batches combine weighted by ``lm_units``.

    Args:
        logits: # (B, T, V)
        labels: # (B, T), IGNORE_INDEX where unsupervised
        reduction: ``token`` or ``sample`` (module doc)

    A batch without a supervised token gives ``lm_loss`` 0 (with a gradient of zeros), never NaN.

    >>> import torch
    >>> logits = torch.zeros(1, 3, 4)
    >>> out = generative_loss(logits, torch.tensor([[-100, 1, 2]]))
    >>> round(float(out["lm_loss"]), 4), int(out["lm_tokens"])  # uniform over 4: log 4
    (1.3863, 2)
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ")
    if reduction not in LM_REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: must be one of {', '.join(LM_REDUCTIONS)}")
    target = labels[:, 1:]  # (B, T-1)
    supervised = target != IGNORE_INDEX
    count = supervised.sum()
    if reduction == "token":
        total = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            target.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return {"lm_loss": total / count.clamp_min(1), "lm_tokens": count, "lm_units": count}
    per_token = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        target.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(target.shape)  # (B, T-1), 0 where unsupervised
    per_row = supervised.sum(dim=1)  # (B,)
    rows = per_row > 0
    means = per_token.sum(dim=1)[rows] / per_row[rows]
    units = rows.sum()
    return {"lm_loss": means.sum() / units.clamp_min(1), "lm_tokens": count, "lm_units": units}
