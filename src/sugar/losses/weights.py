"""The weights of the three losses and the weighted total L = lm * L_g + contrastive * L_c +
alpha * L_d (METHOD.md sections 1 and 7), written once for the objective and everything that
logs it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

__all__ = ["LossWeights"]


@dataclass(frozen=True)
class LossWeights:
    """``lm`` weighs L_g (``train.lm_weight``), ``alpha`` L_d (``structure.alpha``),
    ``contrastive`` L_c (``contrastive.weight``); the config's defaults come from here.

    >>> LossWeights(alpha=0.0).uses_projector, LossWeights().uses_projector
    (False, True)
    """

    lm: float = 1.0
    alpha: float = 1.0
    contrastive: float = 0.0

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.lm < 0 or self.contrastive < 0:
            raise ValueError(
                f"alpha={self.alpha}, lm_weight={self.lm}, "
                f"contrastive_weight={self.contrastive}: must be >= 0"
            )

    @property
    def uses_projector(self) -> bool:
        """Whether L_d or L_c trains the retrieval projector."""
        return self.alpha > 0 or self.contrastive > 0

    def total(self, parts: Mapping[str, Tensor]) -> Tensor:
        """``lm * lm_loss [+ contrastive * contrastive_loss] [+ alpha * structure_loss]`` over
        the parts present (in that order: the sum is the same to the bit wherever it is made).

        >>> import torch
        >>> float(LossWeights(alpha=0.5).total({"lm_loss": torch.tensor(2.0)}))
        2.0
        """
        total = self.lm * parts["lm_loss"]
        if self.contrastive > 0 and "contrastive_loss" in parts:
            total = total + self.contrastive * parts["contrastive_loss"]
        if self.alpha > 0 and "structure_loss" in parts:
            total = total + self.alpha * parts["structure_loss"]
        return total
