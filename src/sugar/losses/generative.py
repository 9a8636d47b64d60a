"""L_g: next-token cross-entropy on the target spans (METHOD.md section 5).

Shapes: B batch, T tokens, V vocabulary.

``labels`` are aligned with the inputs (``labels[b, t]`` is the token at t, IGNORE_INDEX where
unsupervised: context, images, padding), so the logits at t - 1 predict the label at t. The
loss is the mean over every supervised token of the batch (a long caption weighs more than a
short one, as in LLaVA).
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from sugar.data.collate import IGNORE_INDEX

__all__ = ["generative_loss"]


def generative_loss(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """``{"lm_loss": mean NLL per supervised token, "lm_tokens": their count}``.

    Args:
        logits: # (B, T, V)
        labels: # (B, T), IGNORE_INDEX where unsupervised

    A batch without a supervised token gives ``lm_loss`` 0 (with a gradient of zeros), never NaN.

    >>> import torch
    >>> logits = torch.zeros(1, 3, 4)
    >>> out = generative_loss(logits, torch.tensor([[-100, 1, 2]]))
    >>> round(float(out["lm_loss"]), 4), int(out["lm_tokens"])  # uniform over 4: log 4
    (1.3863, 2)
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ")
    target = labels[:, 1:]  # (B, T-1)
    count = (target != IGNORE_INDEX).sum()
    total = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        target.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return {"lm_loss": total / count.clamp_min(1), "lm_tokens": count}
